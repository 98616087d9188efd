// The receiver Allo's best-practices page leads users to write by hand, kept as the peer of
// callfold's benchmark: Express, verification with the official `standardwebhooks` package, a
// webhook-id lookup, and an insert into SQLite with synchronous=FULL, then 200.
//
// Environment: PORT (default 3000), DB_PATH (default peer.db), WEBHOOK_SECRET (whsec_...).
'use strict';

const express = require('express');
const Database = require('better-sqlite3');
const { Webhook } = require('standardwebhooks');

const port = Number(process.env.PORT || 3000);
const db = new Database(process.env.DB_PATH || 'peer.db');
db.pragma('journal_mode = WAL');
db.pragma('synchronous = FULL');
db.exec(`CREATE TABLE IF NOT EXISTS events (
  webhook_id TEXT PRIMARY KEY,
  body TEXT NOT NULL,
  received_at INTEGER NOT NULL
)`);
const findEvent = db.prepare('SELECT 1 FROM events WHERE webhook_id = ?');
const insertEvent = db.prepare(
  'INSERT INTO events (webhook_id, body, received_at) VALUES (?, ?, ?)',
);
const webhook = new Webhook(process.env.WEBHOOK_SECRET);

const app = express();
app.post('/webhooks/allo', express.raw({ type: '*/*', limit: '1mb' }), (req, res) => {
  const payload = req.body.toString('utf8');
  try {
    webhook.verify(payload, req.headers);
  } catch (error) {
    res.status(401).json({ error: 'invalid signature' });
    return;
  }
  const webhookId = req.headers['webhook-id'];
  if (!findEvent.get(webhookId)) {
    insertEvent.run(webhookId, payload, Date.now());
  }
  res.status(200).json({ status: 'ok' });
});

app.listen(port, '127.0.0.1', () => {
  console.log(`listening on ${port}`);
});
