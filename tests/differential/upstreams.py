"""The real upstream servers of the differential suite.

Each one runs on 127.0.0.1 on an ephemeral port, from the files beside this
module, and reports what IT understood of every request (the area its own
routing picked, its path, the headers as its framework exposes them) as one
JSON line in a log file: {"server", "case", "area", "path", "uri",
"headers": {normalised name: [values]}}. Header names are lower-cased with
'_' and '.' read as '-', so every spelling of an identity header is seen.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness import HERE, ROOT, TARGET, Proc, free_port, poll, port_open, which

CATALINA_HOME = Path(os.environ.get("CATALINA_HOME", "/usr/share/tomcat10"))
EXPRESS_DIR = Path(os.environ.get("DIFF_EXPRESS_DIR", str(TARGET / "diff-express"))).resolve()
NAMES = ("tomcat", "express", "wsgi", "php", "nginx")


class Missing(Exception):
    """A counterpart server is not installed."""


class Upstream:
    name = "?"

    def __init__(self, workdir: Path):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = workdir / "requests.jsonl"
        self.log.touch()
        self.proc: Proc | None = None

    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait(self, timeout: float = 60):
        poll(lambda: port_open(self.port), timeout, f"{self.name} on port {self.port}", proc=self.proc)
        return self

    def stop(self):
        if self.proc:
            self.proc.stop()

    def records(self) -> list[dict]:
        out = []
        for line in self.log.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line.decode("utf-8", "replace"))
            except ValueError:
                continue
            out.append(self.normalise(rec))
        return out

    def normalise(self, rec: dict) -> dict:
        return rec


class Tomcat(Upstream):
    name = "tomcat"

    @staticmethod
    def check():
        if not (CATALINA_HOME / "bin" / "bootstrap.jar").is_file():
            raise Missing(f"Tomcat 10 not found at {CATALINA_HOME} (Debian package tomcat10)")
        if not which("java"):
            raise Missing("java not found (Debian package tomcat10 pulls in a JRE)")

    def start(self):
        base = self.workdir / "base"
        for d in ("conf", "logs", "temp", "work", "webapps"):
            (base / d).mkdir(parents=True, exist_ok=True)
        src = HERE / "tomcat"
        shutil.copy(src / "conf" / "web.xml", base / "conf" / "web.xml")
        webapp = base / "report"
        if webapp.exists():
            shutil.rmtree(webapp)
        shutil.copytree(src / "webapp", webapp)
        server = (src / "conf" / "server.xml.in").read_text()
        server = server.replace("@PORT@", str(self.port)).replace("@WEBAPP@", str(webapp))
        (base / "conf" / "server.xml").write_text(server)
        home = CATALINA_HOME
        cp = f"{home}/bin/bootstrap.jar:{home}/bin/tomcat-juli.jar"
        self.proc = Proc(
            "tomcat",
            [
                which("java"),
                "-Xms64m",
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                f"-Dcatalina.home={home}",
                f"-Dcatalina.base={base}",
                f"-Djava.io.tmpdir={base / 'temp'}",
                f"-Ddiff.log={self.log}",
                "-cp",
                cp,
                "org.apache.catalina.startup.Bootstrap",
                "start",
            ],
            self.workdir / "tomcat.out",
        )
        return self.wait(90)


class Express(Upstream):
    name = "express"

    @staticmethod
    def check():
        if not which("node"):
            raise Missing("node not found")
        if not (EXPRESS_DIR / "node_modules" / "express").is_dir():
            install_express()

    def start(self):
        self.proc = Proc(
            "express",
            [which("node"), str(HERE / "express" / "app.js"), str(self.port), str(self.log)],
            self.workdir / "express.out",
            env={"NODE_PATH": str(EXPRESS_DIR / "node_modules"), "NODE_ENV": "production"},
        )
        return self.wait()


def install_express():
    """npm ci of the committed package.json + package-lock.json into target/."""
    npm = which("npm")
    if not npm:
        raise Missing("npm not found (needed to install express)")
    EXPRESS_DIR.mkdir(parents=True, exist_ok=True)
    for f in ("package.json", "package-lock.json"):
        shutil.copy(HERE / "express" / f, EXPRESS_DIR / f)
    r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=EXPRESS_DIR, capture_output=True, text=True, timeout=300)
    if r.returncode != 0 or not (EXPRESS_DIR / "node_modules" / "express").is_dir():
        raise Missing(f"npm ci in {EXPRESS_DIR} failed: {r.stdout[-500:]} {r.stderr[-1500:]}")


class Wsgi(Upstream):
    name = "wsgi"

    @staticmethod
    def gunicorn():
        return which(str(Path(sys.executable).parent / "gunicorn"), "gunicorn")

    @classmethod
    def check(cls):
        if not cls.gunicorn():
            raise Missing("gunicorn not found (pip install gunicorn, tests/differential/requirements.txt)")

    def start(self):
        self.proc = Proc(
            "gunicorn",
            [
                self.gunicorn(),
                "--chdir",
                str(HERE / "wsgi"),
                "--bind",
                self.address(),
                "--workers",
                "1",
                "--worker-class",
                "gthread",
                "--threads",
                "8",
                # what wsgiref, uWSGI, mod_wsgi and CGI do: X_Auth_User_Id is
                # not dropped but folded into HTTP_X_AUTH_USER_ID
                "--header-map",
                "dangerous",
                "--log-level",
                "warning",
                "app:application",
            ],
            self.workdir / "gunicorn.out",
            env={"DIFF_LOG": str(self.log)},
        )
        return self.wait()


class Php(Upstream):
    name = "php"

    @staticmethod
    def check():
        if not which("php"):
            raise Missing("php not found (Debian package php-cli)")

    def start(self):
        self.proc = Proc(
            "php",
            [which("php"), "-S", self.address(), str(HERE / "php" / "router.php")],
            self.workdir / "php.out",
            env={"DIFF_LOG": str(self.log), "PHP_CLI_SERVER_WORKERS": "4"},
            cwd=self.workdir,
        )
        return self.wait()


class Nginx(Upstream):
    name = "nginx"

    @staticmethod
    def binary():
        return which("nginx", "/usr/sbin/nginx")

    @classmethod
    def check(cls):
        if not cls.binary():
            raise Missing("nginx not found (Debian package nginx-light)")

    def start(self):
        conf = (HERE / "nginx" / "upstream.conf.in").read_text()
        conf = conf.replace("@PORT@", str(self.port)).replace("@DIR@", str(self.workdir)).replace("@LOG@", str(self.log))
        (self.workdir / "nginx.conf").write_text(conf)
        self.proc = Proc(
            "nginx",
            [self.binary(), "-e", str(self.workdir / "error.log"), "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf")],
            self.workdir / "nginx.out",
        )
        return self.wait()

    def normalise(self, rec: dict) -> dict:
        # the access log has every known header, "" when nginx does not expose it
        rec["headers"] = {k: [v] for k, v in rec.get("headers", {}).items() if v != ""}
        for k in ("case", "area", "path", "uri"):
            if rec.get(k) == "":
                rec[k] = None
        # a request nginx itself refused (400 before any location) was not served
        if rec.get("area") is None:
            rec["served"] = False
        return rec


CLASSES = {"tomcat": Tomcat, "express": Express, "wsgi": Wsgi, "php": Php, "nginx": Nginx}


def make(name: str, workdir: Path) -> Upstream:
    cls = CLASSES[name]
    cls.check()
    return cls(workdir)
