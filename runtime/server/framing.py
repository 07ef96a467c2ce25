"""uvicorn's HTTP protocol, answering a request it cannot parse with the OpenAI error envelope.

uvicorn answers HTTP it cannot parse (a duplicate or invalid Content-Length, a bad chunk size, an
invalid header, method or request line) with a text/plain 400 and closes the connection; this
subclass sends the same 400 as JSON. Served with `uvicorn.run(..., http=EnvelopeHttpToolsProtocol)`.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from runtime.errors import InvalidRequestError

MALFORMED = InvalidRequestError(
    "Invalid HTTP request received: the request line, a header or the body framing (Content-Length or "
    "chunked encoding) is malformed. Check the client's HTTP library.", code="invalid_http_request")


class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
    def send_400_response(self, msg: str) -> None:
        body = json.dumps(MALFORMED.to_dict()).encode()
        head = [STATUS_LINE[400]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                 b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
