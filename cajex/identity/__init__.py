"""Sign-in: OpenID Connect and OAuth 2 providers, magic links, linked identities.

`cajex.identity.oidc` is the relying-party core (also used by enterprise SSO);
`cajex.identity.providers` configures Google, Apple and GitHub from settings.
"""
