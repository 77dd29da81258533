"""Who is asking and what they may do: SMART scopes, access tokens, client assertions."""
