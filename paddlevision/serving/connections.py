"""The limits on connections that uvicorn 0.55 does not have, on its own h11 protocol.

uvicorn times out a connection only while it idles between requests, and any byte it
receives stops that timer; ``limit_concurrency`` answers beyond its limit with plain text;
a malformed request or a request head over ``h11_max_incomplete_event_size`` gets a
plain-text 400. :class:`LimitedH11Protocol` adds, per connection:

* a deadline for each request head: ``header_timeout_s`` from the connection's start or
  from its previous answer, whatever arrives meanwhile (slow headers, a body trickled
  after an early answer); the connection is closed without an answer, as there is no
  request to answer;
* a cap on open connections: beyond ``max_connections`` every request on a connection is
  answered by ``refusal_app`` (the service's 503 in its protocol), which closes it;
* the 400 for malformed HTTP in the service's protocol (``bad_request_body``).

It is passed to ``uvicorn.Config(http=...)``, which takes a protocol class (or factory);
this also pins the h11 implementation, whose settings these limits rely on.
"""

import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)


class LimitedH11Protocol(H11Protocol):
    def __init__(self, *args, header_timeout_s, max_connections, refusal_app, bad_request_body, **kwargs):
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._max_connections = max_connections
        self._refusal_app = refusal_app
        self._bad_request_body = bad_request_body
        self._head_timer = None
        self._awaited_cycle = None

    def connection_made(self, transport):
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            self.app = self._refusal_app
        self._expect_head()

    def connection_lost(self, exc):
        self._stop_head_timer()
        super().connection_lost(exc)

    def handle_events(self):
        super().handle_events()
        if self._head_timer is not None and self.cycle is not self._awaited_cycle:
            self._stop_head_timer()  # a new request cycle: its head arrived

    def on_response_complete(self):
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._expect_head()

    def send_400_response(self, msg):
        logger.info("%s: %s", _peer(self.client), msg)
        response = h11.Response(
            status_code=400,
            headers=[(b"content-type", b"application/json"), (b"connection", b"close")],
            reason=b"Bad Request",
        )
        for event in (response, h11.Data(data=self._bad_request_body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()

    def _expect_head(self):
        self._stop_head_timer()
        self._awaited_cycle = self.cycle
        self._head_timer = self.loop.call_later(self._header_timeout_s, self._head_timed_out)

    def _stop_head_timer(self):
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self):
        self._head_timer = None
        if not self.transport.is_closing():
            logger.info("%s: no complete request head within header_timeout_s=%g; closed", _peer(self.client),
                        self._header_timeout_s)
            self.transport.close()


def _peer(client):
    return "%s:%d" % client if client else "client"
