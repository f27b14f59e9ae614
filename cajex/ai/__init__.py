"""Per-workspace AI: settings (cajex.ai.settings), the one gateway every AI
call goes through (cajex.ai.gateway) and the provider adapters
(cajex.ai.providers). See docs/ai.md."""
