"""Command groups of the areas (sso, scim, ...): one module each, with
`register(cli)`; cajex.cli adds them all."""
