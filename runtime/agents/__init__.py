"""The agent APIs (OpenAI Responses, Anthropic Messages) as translations to and from chat completions.

Each API turns its request into one chat completions request and renders the chat stream that comes
back in its own events, so every engine or upstream that speaks chat completions serves them all.
"""
