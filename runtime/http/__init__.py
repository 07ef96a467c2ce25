"""What the server and the workers share on the wire: the error envelope, JSON bodies, SSE framing,
multipart forms, uploads, the image file store, the bridge from engine threads to the event loop, and
the log handler."""

# The public URL prefix the client called (e.g. http://127.0.0.1:8080/v1-openai), which the server
# sends to the worker so that answers can hold absolute URLs (images by URL).
BASE_URL_HEADER = "x-stacklet-base-url"
