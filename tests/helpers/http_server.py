"""An HTTP server on 127.0.0.1 in a thread of the test (for checkpoints and images read over
HTTP); `close()` ends it and its thread."""

import http.server
import threading
from typing import Callable


class LocalHTTPServer:
    def __init__(self, handler: Callable[..., http.server.BaseHTTPRequestHandler]) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
