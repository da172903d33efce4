"""talkstream's stream processing side: the Faust app, its settings, the flow
and sink agents, link state, and the CLI commands."""
