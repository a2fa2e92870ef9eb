"""A loopback stand-in for the Hugging Face Hub's file endpoint, for huggingface_hub to talk to.

It serves ``HEAD``/``GET /{owner}/{name}/resolve/{revision}/{filename}`` with the headers huggingface_hub
reads (``X-Repo-Commit``, ``ETag`` = sha256 like an LFS file, ``Content-Length``, ranges) and answers
errors the way the Hub does (``X-Error-Code: RepoNotFound | GatedRepo | RevisionNotFound | EntryNotFound``),
so the real huggingface_hub code builds a real cache layout. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, bytes]]
    refs: dict[str, str]
    gated_token: str | None = None
    bad_etag: bool = False


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        revisions: dict[str, dict[str, bytes]] | None = None,
        gated_token: str | None = None,
        bad_etag: bool = False,
    ) -> str:
        """Add a repo whose ``main`` holds ``files``; ``revisions`` adds tags -> files. Returns main's commit."""
        commits: dict[str, dict[str, bytes]] = {}
        refs: dict[str, str] = {}
        for ref, content in {"main": files, **(revisions or {})}.items():
            commit = hashlib.sha1(f"{repo_id}@{ref}".encode()).hexdigest()
            commits[commit] = content
            refs[ref] = commit
        self.repos[repo_id] = FakeRepo(commits, refs, gated_token, bad_etag)
        return refs["main"]

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # ---------------------------------------------------------------- request handling

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: str, commit: str | None = None) -> None:
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", code)
        if commit:
            h.send_header("X-Repo-Commit", commit)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append({"method": h.command, "path": h.path, "auth": h.headers.get("authorization")})
        parts = h.path.split("?")[0].lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(h, 404, "RepoNotFound")
        repo_id = f"{parts[0]}/{parts[1]}"
        revision = unquote(parts[3])
        filename = unquote("/".join(parts[4:]))
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(h, 401, "RepoNotFound")
        if repo.gated_token is not None and h.headers.get("authorization") != f"Bearer {repo.gated_token}":
            return self._error(h, 401, "GatedRepo")
        commit = repo.refs.get(revision, revision if revision in repo.commits else None)
        if commit is None:
            return self._error(h, 404, "RevisionNotFound")
        data = repo.commits[commit].get(filename)
        if data is None:
            return self._error(h, 404, "EntryNotFound", commit)
        etag = hashlib.sha256(data + (b"x" if repo.bad_etag else b"")).hexdigest()
        start = 0
        rng = h.headers.get("Range")
        status = 200
        if rng and rng.startswith("bytes=") and body:
            start = int(rng[6:].split("-")[0] or 0)
            status = 206
        payload = data[start:]
        h.send_response(status)
        h.send_header("X-Repo-Commit", commit)
        h.send_header("ETag", f'"{etag}"')
        h.send_header("Content-Length", str(len(payload)))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if body:
            h.wfile.write(payload)
