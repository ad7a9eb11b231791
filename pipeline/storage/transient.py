"""Store failures that another try may not meet: the store unreachable, overloaded or slow."""

import re

# How the storage clients (botocore via s3fs, aiohttp, gcsfs, and the image reads' own timeout)
# word such a failure. Ray Data's defaults only know pyarrow's native S3 wording ("AWS Error
# NETWORK_CONNECTION"). Each is a regular expression, as Ray Data takes them.
TRANSIENT_ERRORS = (
    r"Could not connect to the endpoint URL",
    r"Connect timeout on endpoint URL",
    r"Read timeout on endpoint URL",
    r"Connection was closed before we received a valid response",
    r"ConnectionResetError|Connection reset by peer",
    r"ConnectionRefusedError|Connection refused",
    r"ServerDisconnectedError|ClientConnectorError|ClientOSError",
    r"ServiceUnavailable|SlowDown|RequestTimeout|InternalError",
    r"HTTP status 5\d\d|\b(5\d\d|429), message=",  # botocore's and aiohttp's wording of a status
    r"Service Unavailable|Bad Gateway|Gateway Time-?out|Internal Server Error|Too Many Requests",
    r"took more than input\.read_timeout_s",
)


def is_transient(error: str) -> bool:
    """Whether an error message is one of a store's transient failures (TRANSIENT_ERRORS)."""
    return any(re.search(pattern, error) for pattern in TRANSIENT_ERRORS)
