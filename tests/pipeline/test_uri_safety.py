"""Image URIs are checked in the form that is read: fsspec's other URI forms, encoded or
dotted HTTP paths and HTTP redirects cannot reach files outside input.allowed_uri_prefixes.
Real files in a temporary directory and real HTTP servers on 127.0.0.1; the working
directory lies under the allowed prefix, where a URI compared as a relative path would pass."""

import http.server
import io
import posixpath
import urllib.parse
from typing import Dict, Iterator, Tuple

import fsspec
import pyarrow as pa
import pytest
from helpers.http_server import LocalHTTPServer
from PIL import Image

from pipeline.config import ImageSourceConfig, StorageConfig
from pipeline.inputs.images import MAX_REDIRECTS, ImageReader
from pipeline.storage import uri_allowed, uri_problem

SECRET = b"SECRET-BYTES-never-to-be-read"
PUBLIC = b"public image bytes"
UNSUPPORTED = "give a plain path or one of file://, s3://, gs://, gcs://, http://, https://, hf://"


def image_source(prefixes) -> ImageSourceConfig:
    return ImageSourceConfig(id_column="id", boxes_column="boxes", image_uri_column="uri",
                             allowed_uri_prefixes=list(prefixes), read_timeout_s=5)


def refusal(reader: ImageReader, uri: str, kind: type) -> str:
    """The message of the `kind` error reading `uri` raises; a failure naming what was read
    (the secret, on a bypass) when it is read."""
    try:
        data = reader.read_uri(uri, "uri")
    except kind as e:
        assert SECRET.decode() not in str(e)
        return str(e)
    pytest.fail(f"{uri} was read: {'THE SECRET' if data == SECRET else data!r}")


def handler(answers: Dict[str, Tuple[int, Dict[str, str], bytes]], head_answers: Dict[str, int]):
    """A server that percent-decodes the request path and resolves its '..' before looking it up
    in `answers` (path -> status, headers, body), as some servers do; paths in `head_answers`
    answer HEAD with 200 and that Content-Length, and a GET as `answers` says."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            path = posixpath.normpath(urllib.parse.unquote(self.path.split("?", 1)[0]))
            status, headers, data = answers.get(path, (404, {}, b""))
            length = len(data)
            if not body and path in head_answers:
                status, headers, length = 200, {}, head_answers[path]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def log_message(self, *args) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def servers() -> Iterator[Tuple[str, str]]:
    """(the server whose /public/ is allowed, another origin that serves the secret anywhere)."""
    other = LocalHTTPServer(handler({"/public/ok.png": (200, {}, SECRET)}, {}))
    found = lambda data: (200, {}, data)  # noqa: E731 - a table of answers reads best flat
    moved = lambda to: (302, {"Location": to}, b"")  # noqa: E731
    answers = {
        "/public/ok.png": found(PUBLIC), "/private/secret.png": found(SECRET),
        "/public/to-private": moved("/private/secret.png"), "/public/to-public": moved("/public/ok.png"),
        "/public/to-other-port": moved(other.url + "/public/ok.png"),
        "/public/to-encoded": moved("/public/%2e%2e/private/secret.png"), "/public/to-file": moved("file:///etc/hostname"),
        "/public/loop": moved("/public/loop"), "/public/get-redirects": moved("/private/secret.png"),
        "/public/sized-get-redirects": moved("/private/secret.png"),
    }
    # fsspec streams a file of unknown (0) size and reads one of known size in ranges.
    main = LocalHTTPServer(handler(answers, {"/public/get-redirects": 0, "/public/sized-get-redirects": len(SECRET)}))
    try:
        yield main.url, other.url
    finally:
        main.close()
        other.close()


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """allowed/ (the prefix) with input/ (the input's directory) and images/ok.png; the secret
    in home/ ($HOME) beside it; the working directory allowed/work, under the prefix."""
    allowed, home = tmp_path / "allowed", tmp_path / "home"
    for folder in (allowed / "input", allowed / "images", allowed / "work" / "images", home):
        folder.mkdir(parents=True)
    (allowed / "images" / "ok.png").write_bytes(PUBLIC)
    (allowed / "work" / "images" / "ok.png").write_bytes(b"the working directory's file")
    (home / "secret.png").write_bytes(SECRET)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(allowed / "work")
    return {"allowed": str(allowed), "input": str(allowed / "input"), "secret": str(home / "secret.png")}


LOCAL_BYPASSES = {
    "file_single_slash": ("file:{secret}", "(a 'scheme:' prefix without '//'): " + UNSUPPORTED),
    "local_protocol": ("local:{secret}", "(a 'scheme:' prefix without '//'): " + UNSUPPORTED),
    "simplecache_chain": ("simplecache::{secret}", "(fsspec reads '::' as a chain of protocols): " + UNSUPPORTED),
    "filecache_chain": ("filecache::{secret}", "(fsspec reads '::' as a chain of protocols): " + UNSUPPORTED),
    "blockcache_chain": ("blockcache::{secret}", "(fsspec reads '::' as a chain of protocols): " + UNSUPPORTED),
    "home_tilde": ("~/secret.png", "('~' is not expanded to a home directory): give an absolute path"),
    "file_url_home_tilde": ("file://~/secret.png", "('~' is not expanded to a home directory): give an absolute path"),
}


@pytest.mark.parametrize("case", list(LOCAL_BYPASSES))
def test_local_uri_forms_fsspec_reads_otherwise_are_refused(tree, case):
    written, why = LOCAL_BYPASSES[case]
    uri = written.format(**tree)
    fs, path = fsspec.core.url_to_fs(uri)
    assert fs.cat_file(path) == SECRET  # for fsspec, the form names the secret
    assert not uri_allowed(uri, [tree["allowed"]])
    for directory in (tree["input"], None):
        reader = ImageReader(image_source([tree["allowed"]]), StorageConfig(), directory)
        assert refusal(reader, uri, ValueError) == f"unsupported URI form {uri!r} {why} (uri)"


def test_supported_local_forms_still_read_and_relative_paths_follow_the_input(tree):
    reader = ImageReader(image_source([tree["allowed"]]), StorageConfig(), tree["input"])
    image = tree["allowed"] + "/images/ok.png"
    for uri in (image, "file://" + image, "../images/ok.png", "file://../images/ok.png"):
        assert reader.read_uri(uri, "uri") == PUBLIC, uri
    # The working directory holds images/ok.png too; the input's directory does not.
    with pytest.raises(FileNotFoundError, match=r"/input/images/ok\.png not found \(uri 'images/ok\.png' \(a relative"):
        reader.read_uri("images/ok.png", "uri")
    assert not uri_allowed("images/ok.png", [tree["allowed"]])  # relative to what: refused, never the working dir
    with pytest.raises(PermissionError, match="lies outside input.allowed_uri_prefixes"):
        reader.read_uri(tree["secret"], "uri")


HTTP_BYPASSES = {
    # The HTTP client decodes %2e and resolves '..' after the check.
    "encoded_dots": ("/public/%2e%2e/private/secret.png", "percent-encoded"),
    "encoded_dots_upper": ("/public/%2E%2E/private/secret.png", "percent-encoded"),
    # The server decodes %2f (and %5c, %25) before it resolves the path.
    "encoded_slash": ("/public/..%2fprivate/secret.png", "percent-encoded"),
    "encoded_backslash": ("/public/..%5cprivate/secret.png", "percent-encoded"),
    "double_encoded": ("/public/%252e%252e/private/secret.png", "percent-encoded"),
    "backslash": ("/public/..\\private/secret.png", "percent-encoded"),
    "dot_segments": ("/public/../private/secret.png", "'.' or '..' path segments"),
}


@pytest.mark.parametrize("case", list(HTTP_BYPASSES))
def test_http_paths_that_decode_or_resolve_elsewhere_are_refused(servers, case):
    url, _ = servers
    path, why = HTTP_BYPASSES[case]
    reader = ImageReader(image_source([url + "/public/"]), StorageConfig())
    message = refusal(reader, url + path, ValueError)
    assert message.startswith(url + path) and why in message and message.endswith("(uri)")
    assert not uri_allowed(url + path, [url + "/public/"])


REDIRECTS = {
    "to_private_path": ("/public/to-private", "to {url}/private/secret.png, which is not followed: it lies outside "
                                              "input.allowed_uri_prefixes ({url}/public/)"),
    "to_other_port": ("/public/to-other-port", "to {other}/public/ok.png, which is not followed: it lies outside"),
    "to_encoded_path": ("/public/to-encoded", "percent-encoded"),
    "to_a_local_file": ("/public/to-file", "an HTTP redirect may lead only to http(s) URLs"),
    # HEAD answers 200, the read's GET redirects: the reads follow no redirect either.
    "only_the_get_redirects": ("/public/get-redirects", "to {url}/private/secret.png, which is not followed: it lies"),
    "only_the_ranged_get_redirects": ("/public/sized-get-redirects", "to {url}/private/secret.png, which is not"),
}


@pytest.mark.parametrize("case", list(REDIRECTS))
def test_http_redirects_outside_the_prefixes_are_not_followed(servers, case):
    url, other = servers
    path, why = REDIRECTS[case]
    reader = ImageReader(image_source([url + "/public/"]), StorageConfig())
    message = refusal(reader, url + path, PermissionError)
    assert message.startswith(f"{url}{path} redirects (HTTP 302) to ") and "which is not followed" in message
    assert why.format(url=url, other=other) in message


def test_http_redirects_inside_the_prefixes_are_followed_a_few_times(servers):
    url, _ = servers
    reader = ImageReader(image_source([url + "/public/"]), StorageConfig())
    assert reader.read_uri(url + "/public/to-public", "uri") == PUBLIC
    with pytest.raises(ValueError, match=f"^{url}/public/loop redirects more than {MAX_REDIRECTS} times$"):
        reader.read_uri(url + "/public/loop", "uri")


def test_relative_paths_beside_an_http_input_resolve_their_dots_before_the_check(servers):
    url, _ = servers
    reader = ImageReader(image_source([url + "/public/"]), StorageConfig(), url + "/public/set")
    assert reader.read_uri("../ok.png", "uri") == PUBLIC
    with pytest.raises(PermissionError, match=f"^{url}/private/secret.png lies outside"):
        reader.read_uri("../../private/secret.png", "uri")
    with pytest.raises(ValueError, match="percent-encoded"):
        reader.read_uri("..%2f..%2fprivate/secret.png", "uri")


def test_uri_problem_names_only_what_the_job_does_not_read():
    for fine in ("/data/a.png", "images/a.png", "file:///data/a.png", "s3://b/a.png", "gs://b/a.png",
                 "gcs://b/a.png", "hf://datasets/org/name/a.png", "https://h/a%20b.png?x=../y",
                 "s3://b/100%25.png"):
        assert uri_problem(fine) is None, fine
    for refused in ("ftp://h/a.png", "memory://a.png", "c:/a.png", "s3://b/images/./a.png", "gs://b/x/../a.png",
                    "hf://org/name/../other/a.png", "http://[::1]/a.png"):
        assert uri_problem(refused) is not None, refused


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def test_refused_uris_are_row_errors_in_the_decode_stage(tree, servers):
    from pipeline.stages.decode import DecodeUDF

    url, _ = servers
    with open(tree["allowed"] + "/images/real.png", "wb") as f:
        f.write(png())
    uris = ["../images/real.png", "simplecache::" + tree["secret"], url + "/public/%2e%2e/private/secret.png",
            url + "/public/to-private"]
    batch = pa.table({"id": ["good", "chain", "encoded", "redirect"], "uri": uris,
                      "boxes": [[[1.0, 1.0, 20.0, 20.0]]] * len(uris)})
    udf = DecodeUDF(image_source([tree["allowed"], url + "/public/"]), StorageConfig(), 64, directory=tree["input"])
    rows = udf.process(batch)
    assert rows[0].error is None and rows[0].image_size == [32, 32]
    assert rows[1].error.startswith("image_read: ValueError: unsupported URI form 'simplecache::")
    assert rows[2].error.startswith(f"image_read: ValueError: {uris[2]} has a '\\' or a percent-encoded")
    assert rows[3].error.startswith(f"image_read: PermissionError: {uris[3]} redirects (HTTP 302) to {url}/private/")
    assert all(row.pixels is None for row in rows[1:])
