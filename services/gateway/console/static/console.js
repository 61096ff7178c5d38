/* Taskroute console: the little script the pages need (no library, no build step).
 *
 * - a job page's heartbeat while it is open (keeps the member's lease alive);
 * - confidential data on demand, hidden again on leaving the page; sealed envelopes
 *   (docs/envelope.md, version 1) are opened here with the member's private key, never on
 *   the server: HPKE base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM
 *   (RFC 9180), written with WebCrypto;
 * - making the member's X25519 key pair in this browser (the private key is not extractable
 *   and stays in IndexedDB; only the public key is sent).
 */
"use strict";
(function () {
  const subtle = window.crypto && window.crypto.subtle;
  const te = new TextEncoder();
  const HEARTBEAT_MS = 60000; // a lease lasts 15 min: a beat a minute survives a few failures

  function csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "X-CSRF-Token": csrf(),
      },
      body: body === undefined ? "{}" : JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const detail = data && data.detail ? data.detail : "HTTP " + response.status;
      throw new Error(detail);
    }
    return data;
  }

  // --- bytes -------------------------------------------------------------------------------
  function b64urlDecode(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "===".slice((b64.length + 3) % 4);
    const raw = atob(padded);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }
  function b64urlEncode(bytes) {
    let raw = "";
    for (const b of bytes) raw += String.fromCharCode(b);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) { out.set(p, at); at += p.length; }
    return out;
  }
  function i2osp(value, length) {
    const out = new Uint8Array(length);
    for (let i = length - 1; i >= 0; i--) { out[i] = value & 0xff; value >>= 8; }
    return out;
  }
  // docs/envelope.md, "Context encoding".
  function encodeContext(label, fields) {
    const parts = [te.encode("TRENV1"), i2osp(te.encode(label).length, 1), te.encode(label),
      i2osp(fields.length, 1)];
    for (const f of fields) { const b = te.encode(f); parts.push(i2osp(b.length, 2), b); }
    return concat(...parts);
  }

  // --- HPKE (RFC 9180) base mode, open only ------------------------------------------------
  const EMPTY = new Uint8Array(0);
  const KEM_SUITE = concat(te.encode("KEM"), i2osp(0x0020, 2));
  const HPKE_SUITE = concat(te.encode("HPKE"), i2osp(0x0020, 2), i2osp(0x0001, 2), i2osp(0x0002, 2));

  async function hmac(key, data) {
    // HKDF-Extract with an empty salt uses HashLen zero bytes (RFC 5869); HMAC treats both alike.
    const k = await subtle.importKey("raw", key.length ? key : new Uint8Array(32),
      { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return new Uint8Array(await subtle.sign("HMAC", k, data));
  }
  function labeledExtract(suite, salt, label, ikm) {
    return hmac(salt, concat(te.encode("HPKE-v1"), suite, te.encode(label), ikm));
  }
  async function labeledExpand(suite, prk, label, info, length) {
    // Every length here is at most 32 bytes: one HKDF-Expand block.
    const labeledInfo = concat(i2osp(length, 2), te.encode("HPKE-v1"), suite, te.encode(label), info);
    return (await hmac(prk, concat(labeledInfo, new Uint8Array([1])))).slice(0, length);
  }
  async function hpkeOpen(privateKey, publicRaw, encapsulated, info, ciphertext) {
    const publicE = await subtle.importKey("raw", encapsulated, { name: "X25519" }, false, []);
    const dh = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: publicE }, privateKey, 256));
    const prk = await labeledExtract(KEM_SUITE, EMPTY, "eae_prk", dh);
    const shared = await labeledExpand(KEM_SUITE, prk, "shared_secret", concat(encapsulated, publicRaw), 32);
    const pskIdHash = await labeledExtract(HPKE_SUITE, EMPTY, "psk_id_hash", EMPTY);
    const infoHash = await labeledExtract(HPKE_SUITE, EMPTY, "info_hash", info);
    const context = concat(new Uint8Array([0]), pskIdHash, infoHash);
    const secret = await labeledExtract(HPKE_SUITE, shared, "secret", EMPTY);
    const key = await labeledExpand(HPKE_SUITE, secret, "key", context, 32);
    const nonce = await labeledExpand(HPKE_SUITE, secret, "base_nonce", context, 12);
    const aes = await subtle.importKey("raw", key, { name: "AES-GCM" }, false, ["decrypt"]);
    return new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: EMPTY }, aes, ciphertext));
  }
  async function openEnvelope(envelope, stored) {
    if (envelope.v !== 1) throw new Error("unsupported envelope version");
    const wrapped = b64urlDecode(envelope.wrapped_key);
    if (wrapped.length !== 80) throw new Error("malformed envelope");
    const info = encodeContext("hpke-info",
      [envelope.tenant_id, envelope.job_ref, envelope.key_id, envelope.recipient_key_id]);
    const dataKey = await hpkeOpen(stored.privateKey, b64urlDecode(stored.publicKey),
      wrapped.slice(0, 32), info, wrapped.slice(32));
    if (dataKey.length !== 32) throw new Error("malformed data key");
    const aad = encodeContext("payload-aad", [envelope.tenant_id, envelope.job_ref, envelope.key_id]);
    const aes = await subtle.importKey("raw", dataKey, { name: "AES-GCM" }, false, ["decrypt"]);
    const plain = await subtle.decrypt({ name: "AES-GCM", iv: b64urlDecode(envelope.nonce), additionalData: aad },
      aes, concat(b64urlDecode(envelope.ciphertext), b64urlDecode(envelope.tag)));
    return JSON.parse(new TextDecoder().decode(plain));
  }

  // --- the member's key in IndexedDB ---------------------------------------------------------
  function keyStore(mode, action) {
    return new Promise((resolve, reject) => {
      const opening = indexedDB.open("taskroute-console", 1);
      opening.onupgradeneeded = () => opening.result.createObjectStore("keys");
      opening.onerror = () => reject(opening.error);
      opening.onsuccess = () => {
        const db = opening.result;
        const tx = db.transaction("keys", mode);
        const request = action(tx.objectStore("keys"));
        tx.oncomplete = () => { db.close(); resolve(request.result); };
        tx.onerror = () => { db.close(); reject(tx.error); };
      };
    });
  }
  const loadKey = (keyId) => keyStore("readonly", (s) => s.get(keyId));
  const saveKey = (keyId, value) => keyStore("readwrite", (s) => s.put(value, keyId));

  function setupKeys() {
    const button = document.getElementById("generate-key");
    if (!button) return;
    const status = document.getElementById("browser-key");
    const registered = document.getElementById("registered-key-id");
    if (registered) {
      loadKey(registered.textContent.trim()).then((k) => {
        status.textContent = k ? "This browser holds the private key of the registered key."
          : "This browser does not hold the registered key's private key.";
      }).catch(() => { status.textContent = "This browser cannot store keys."; });
    }
    button.addEventListener("click", async () => {
      button.disabled = true;
      status.textContent = "Making a key pair…";
      try {
        const pair = await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
        const publicKey = b64urlEncode(new Uint8Array(await subtle.exportKey("raw", pair.publicKey)));
        const answer = await post(button.dataset.url, { public_key: publicKey });
        await saveKey(answer.key_id, { privateKey: pair.privateKey, publicKey: publicKey });
        document.getElementById("key-registered").innerHTML = "";
        const code = document.createElement("code");
        code.id = "registered-key-id";
        code.textContent = answer.key_id;
        document.getElementById("key-registered").append("Registered key: ", code);
        status.textContent = "Key made in this browser and registered.";
      } catch (error) {
        status.textContent = "The key could not be made or registered: " + error.message;
      } finally {
        button.disabled = false;
      }
    });
  }

  // --- confidential data on demand -----------------------------------------------------------
  function setupConfidential() {
    const reveal = document.getElementById("reveal-confidential");
    if (!reveal) return;
    const hide = document.getElementById("hide-confidential");
    const out = document.getElementById("confidential-data");
    const note = document.getElementById("confidential-note");
    const clear = () => {
      out.textContent = "";
      out.hidden = true;
      hide.hidden = true;
      reveal.hidden = false;
    };
    hide.addEventListener("click", () => { clear(); note.textContent = "Hidden."; reveal.focus(); });
    // Leaving the page (or it being frozen) wipes what was shown.
    window.addEventListener("pagehide", () => { clear(); note.textContent = ""; });
    reveal.addEventListener("click", async () => {
      reveal.disabled = true;
      note.textContent = "Fetching…";
      try {
        const answer = await post(reveal.dataset.url);
        let data;
        if (answer && "confidential_sealed" in answer) {
          const envelope = answer.confidential_sealed;
          const stored = await loadKey(envelope.recipient_key_id).catch(() => undefined);
          if (!stored) {
            note.textContent = "The data is sealed to key " + envelope.recipient_key_id +
              ", whose private key is not in this browser. Open it in the browser that made the key.";
            return;
          }
          data = await openEnvelope(envelope, stored);
          note.textContent = "Decrypted in this browser with your key " + envelope.recipient_key_id + ".";
        } else {
          data = answer ? answer.confidential : null;
          note.textContent = "Shown until you hide it or leave this page.";
        }
        out.textContent = JSON.stringify(data, null, 2);
        out.hidden = false;
        hide.hidden = false;
        reveal.hidden = true;
        out.focus();
      } catch (error) {
        note.textContent = "The confidential data could not be shown: " + error.message;
      } finally {
        reveal.disabled = false;
      }
    });
  }

  // --- heartbeat -----------------------------------------------------------------------------
  function setupHeartbeat() {
    const lease = document.getElementById("lease");
    if (!lease) return;
    const status = document.getElementById("heartbeat-status");
    const expiry = document.getElementById("lease-expiry");
    let timer = null;
    const beat = async () => {
      try {
        const answer = await post(lease.dataset.heartbeatUrl);
        if (expiry && answer.expires_at) {
          expiry.textContent = new Date(answer.expires_at).toISOString().replace("T", " ").slice(0, 19) + " UTC";
        }
        status.textContent = "Lease kept alive at " + new Date().toLocaleTimeString() + ".";
      } catch (error) {
        status.textContent = "Lease not extended: " + error.message;
      }
    };
    timer = window.setInterval(beat, HEARTBEAT_MS);
    window.addEventListener("pagehide", () => window.clearInterval(timer));
    lease.dataset.started = "true";
  }

  document.addEventListener("DOMContentLoaded", () => {
    setupHeartbeat();
    setupConfidential();
    setupKeys();
  });
})();
