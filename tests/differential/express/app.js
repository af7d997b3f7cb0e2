// Express upstream of the differential suite: default settings (routing is
// case-insensitive, "strict routing" off). Each route reports what Express
// understood: the area its router picked, req.path, and every header as the
// client sent it to Node (names lower-cased, '_' and '.' read as '-').
// Usage: node app.js PORT LOGFILE
'use strict';
const fs = require('fs');
const express = require('express');

const [port, logFile] = process.argv.slice(2);
const app = express();
app.disable('x-powered-by');

function report(area) {
  return (req, res) => {
    const headers = {};
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const name = req.rawHeaders[i].toLowerCase().replace(/[_.]/g, '-');
      (headers[name] = headers[name] || []).push(req.rawHeaders[i + 1]);
    }
    const body = JSON.stringify({
      server: 'express',
      case: req.get('x-diff-case') || null,
      area,
      path: req.path,
      uri: req.originalUrl,
      headers,
    });
    if (logFile) fs.appendFileSync(logFile, body + '\n');
    res.type('application/json').send(body);
  };
}

app.all('/public/*rest', report('public'));
app.all('/admin-area/*rest', report('admin-area'));
app.all('/member-area/*rest', report('member-area'));
app.use(report('other'));

app.listen(Number(port), '127.0.0.1');
