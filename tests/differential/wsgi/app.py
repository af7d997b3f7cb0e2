"""WSGI upstream of the differential suite, served by gunicorn.

Reports what a WSGI application understands of the request: PATH_INFO (the
decoded path), the area by a plain case-sensitive prefix match on it (as a
Werkzeug/Flask rule would), and every HTTP_* key of environ (names
lower-cased with '_' and '.' read as '-'; WSGI folds '-' into '_', so
X-Auth-User-Id and X_Auth_User_Id land on the same key). gunicorn runs with
--header-map dangerous, the behaviour of most WSGI/CGI servers (wsgiref,
uWSGI, mod_wsgi, lighttpd): a header spelled with '_' is not dropped.

The log file is named by the DIFF_LOG environment variable.
"""

import json
import os
import threading

AREAS = ("public", "admin-area", "member-area")
_LOCK = threading.Lock()


def area_of(path):
    for area in AREAS:
        if path.startswith("/" + area + "/"):
            return area
    return "other"


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    headers = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].lower().replace("_", "-").replace(".", "-")
            headers.setdefault(name, []).append(value)
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers.setdefault(key.lower().replace("_", "-"), []).append(environ[key])
    record = {
        "server": "wsgi",
        "case": environ.get("HTTP_X_DIFF_CASE"),
        "area": area_of(path),
        "path": path,
        "uri": environ.get("RAW_URI") or environ.get("REQUEST_URI"),
        "headers": headers,
    }
    body = json.dumps(record).encode()
    log = os.environ.get("DIFF_LOG")
    if log:
        with _LOCK, open(log, "ab") as f:
            f.write(body + b"\n")
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
