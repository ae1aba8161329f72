"""A fake model hub on 127.0.0.1 serving one repository at one commit, for offline tests of
``ambiemo.models.weights`` (``HF_ENDPOINT`` points huggingface_hub at it). It speaks the few routes a
snapshot download uses: the model-info API and ``resolve`` (HEAD and GET) for each file."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class FakeHub:
    def __init__(self, repo_id: str, commit: str, files: dict[str, bytes]) -> None:
        self.repo_id, self.commit, self.files = repo_id, commit, files
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _route(self) -> tuple[str, str | None]:
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                api = f"/api/models/{hub.repo_id}/revision/"
                if path.startswith(api):
                    return "info", path[len(api) :]
                tree = f"/api/models/{hub.repo_id}/tree/"
                if path.startswith(tree):
                    return "tree", path[len(tree) :].split("/")[0]
                prefix = f"/{hub.repo_id}/resolve/"
                if path.startswith(prefix):
                    rev, _, name = path[len(prefix) :].partition("/")
                    return ("file", name) if rev in (hub.commit, "main") else ("missing", None)
                return "missing", None

            def _headers(self, name: str) -> bytes:
                data = hub.files[name]
                digest = hashlib.sha256(data).hexdigest()
                self.send_response(200)
                self.send_header("X-Repo-Commit", hub.commit)
                self.send_header("ETag", f'"{digest}"')
                self.send_header("X-Linked-Etag", f'"{digest}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                return data

            def do_HEAD(self) -> None:
                kind, name = self._route()
                if kind == "file" and name in hub.files:
                    self._headers(name)
                else:
                    self.send_response(404)
                    self.end_headers()

            def do_GET(self) -> None:
                kind, name = self._route()
                if kind in ("info", "tree") and name in (hub.commit, "main"):
                    body = json.dumps(hub.info() if kind == "info" else hub.tree()).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif kind == "file" and name in hub.files:
                    self.wfile.write(self._headers(name))
                else:
                    body = b'{"error": "not found"}'
                    self.send_response(404)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("X-Error-Code", "RepoNotFound")
                    self.end_headers()
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def info(self) -> dict:
        siblings = []
        for name, data in sorted(self.files.items()):
            entry = {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest()}
            if name.endswith(".safetensors"):
                entry["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(entry)
        return {
            "id": self.repo_id,
            "modelId": self.repo_id,
            "sha": self.commit,
            "private": False,
            "siblings": siblings,
            "tags": [],
            "downloads": 0,
            "likes": 0,
        }

    def tree(self) -> list[dict]:
        out = []
        for name, data in sorted(self.files.items()):
            entry = {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
            if name.endswith(".safetensors"):
                entry["lfs"] = {"size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            out.append(entry)
        return out

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
