<?php
// Tether state rehydration for native PHP sessions ($_SESSION, any save handler), README.md:
//
//   require __DIR__ . '/tether.php';
//   $outcome = tether_session_start();   // instead of session_start()
//
// Every answer carries a signed checkpoint of the session (X-Tether-State); when Tether moves a
// user to another replica it delivers the newest one (X-Tether-Rehydrate), restored here only
// if it verifies. Needs TETHER_STATE_SECRET (the same on every replica, at least 32 bytes):
// without it nothing is checkpointed or restored, and every request logs why.
//
// Checkpoint format (the same as examples/laravel/TetherSessionState.php):
// `v1.<base64url(JSON envelope)>.<base64url(HMAC-SHA256)>`, the envelope being
// {"sid": session id, "at": unix seconds, "s": $_SESSION}; the MAC covers `v1.<body>` with the key
// HMAC-SHA256(key: the secret's bytes, message: "tether-session-state-v1").
//
// A delivered checkpoint replaces $_SESSION only when all of these hold, else it is ignored
// (logged) and the request goes on with the local session:
// - its MAC verifies (constant time) under TETHER_STATE_SECRET or TETHER_STATE_SECRET_PREVIOUS;
// - its sid is the session id this request presented (the session cookie), so no other user's
//   state is restored, whatever the proxy or the client sends;
// - it is at most session.gc_maxlifetime old (and at most 60 s in the future);
// - it is newer than the local session by its Tether epoch (__tether_epoch, the highest
//   X-Tether-Epoch of the requests that wrote it: the user moved since the local copy was
//   written, so the local copy is the one left behind, whatever its version) or by its
//   __tether_version (bumped once per request); a copy older by both (a burst of requests moved
//   together, a replayed checkpoint) is not restored.
declare(strict_types=1);

/** Session key of the checkpoint version. */
const TETHER_VERSION_KEY = '__tether_version';
/** Session key of the Tether epoch of the request that last wrote the session. */
const TETHER_EPOCH_KEY = '__tether_epoch';
const TETHER_FORMAT = 'v1';
const TETHER_KEY_CONTEXT = 'tether-session-state-v1';
/** Shortest secret accepted, in bytes (32 random bytes, as for Laravel's APP_KEY). */
const TETHER_MIN_SECRET_BYTES = 32;
/** Seconds a checkpoint may be ahead of this replica's clock. */
const TETHER_CLOCK_SKEW = 60;

function tether_b64url_encode(string $bytes): string
{
    return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
}

/**
 * Signing keys derived from TETHER_STATE_SECRET (signs and verifies) and, while rotating,
 * TETHER_STATE_SECRET_PREVIOUS (verifies only); a string saying what is wrong when the secret
 * is missing or too short.
 *
 * @return list<string>|string
 */
function tether_keys()
{
    $keys = [];
    foreach (['TETHER_STATE_SECRET', 'TETHER_STATE_SECRET_PREVIOUS'] as $i => $name) {
        $secret = (string) getenv($name);
        if ($secret === '' && $i > 0) continue;
        if (strlen($secret) < TETHER_MIN_SECRET_BYTES) {
            return $secret === ''
                ? "$name is not set"
                : "$name is shorter than " . TETHER_MIN_SECRET_BYTES . ' bytes';
        }
        $keys[] = hash_hmac('sha256', TETHER_KEY_CONTEXT, $secret, true);
    }
    return $keys;
}

/** The checkpoint of a session: `v1.<body>.<mac>`; null when JSON cannot encode the session. */
function tether_encode_state(string $sid, array $session, string $key): ?string
{
    $envelope = ['sid' => $sid, 'at' => time(), 's' => $session];
    $json = json_encode($envelope, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION);
    if ($json === false) return null; // e.g. invalid UTF-8 or resources: no checkpoint rather than a wrong one
    $signed = TETHER_FORMAT . '.' . tether_b64url_encode($json);
    return $signed . '.' . tether_b64url_encode(hash_hmac('sha256', $signed, $key, true));
}

/**
 * The envelope of a checkpoint that verifies under one of `$keys` and is well-formed, or why
 * not: 'malformed' or 'signature'.
 *
 * @param list<string> $keys
 * @return array{sid: string, at: int, s: array}|string
 */
function tether_decode_state(string $value, array $keys)
{
    $parts = explode('.', trim($value));
    if (count($parts) !== 3 || $parts[0] !== TETHER_FORMAT) return 'malformed';
    $signed = $parts[0] . '.' . $parts[1];
    $verified = false;
    foreach ($keys as $key) {
        // every key is tried, so the time taken does not tell which one matched
        $verified = hash_equals(tether_b64url_encode(hash_hmac('sha256', $signed, $key, true)), $parts[2]) || $verified;
    }
    if (!$verified) return 'signature';
    $json = base64_decode(strtr($parts[1], '-_', '+/'), true);
    $envelope = $json === false ? null : json_decode($json, true, 64);
    $ok = is_array($envelope) && is_string($envelope['sid'] ?? null) && is_int($envelope['at'] ?? null)
        && is_array($envelope['s'] ?? null) && is_int($envelope['s'][TETHER_VERSION_KEY] ?? null);
    return $ok ? $envelope : 'malformed';
}

/**
 * What to do with a delivered checkpoint: the session to restore, or why it is ignored
 * ('malformed', 'signature', 'another session', 'expired', 'not newer').
 *
 * @param list<string> $keys
 * @return array|string
 */
function tether_verify_state(string $value, array $keys, string $presentedId, int $localVersion, int $localEpoch = 0)
{
    $envelope = tether_decode_state($value, $keys);
    if (is_string($envelope)) return $envelope;
    if ($presentedId === '' || !hash_equals($presentedId, $envelope['sid'])) return 'another session';
    $age = time() - $envelope['at'];
    if ($age > (int) ini_get('session.gc_maxlifetime') || $age < -TETHER_CLOCK_SKEW) return 'expired';
    $epoch = $envelope['s'][TETHER_EPOCH_KEY] ?? 0;
    $epoch = is_int($epoch) ? $epoch : 0;
    if ($epoch <= $localEpoch && $envelope['s'][TETHER_VERSION_KEY] <= $localVersion) return 'not newer';
    return $envelope['s'];
}

/**
 * session_start() plus rehydration. Returns what became of an X-Tether-Rehydrate header:
 * 'none' (there was none), 'restored', 'ignored: <why>' (see above), 'disabled: <why>' (no
 * usable secret: nothing restored, no checkpoint sent), or 'failed: session_start'.
 * Starts output buffering so the checkpoint headers can still be sent at the end.
 *
 * Example: `$outcome = tether_session_start(); // 'restored' on a moved user's first request`
 */
function tether_session_start(array $options = []): string
{
    // The id the client presented, read before session_start(): with session.use_strict_mode=1
    // PHP replaces an id it does not know (a moved user's) by a new one.
    $cookie = $_COOKIE[session_name()] ?? null;
    if (session_status() !== PHP_SESSION_ACTIVE && !session_start($options)) return 'failed: session_start';
    $presentedId = is_string($cookie) ? $cookie : session_id();
    $local = $_SESSION[TETHER_VERSION_KEY] ?? 0;
    $local = is_int($local) ? $local : 0;
    $localEpoch = $_SESSION[TETHER_EPOCH_KEY] ?? 0;
    $localEpoch = is_int($localEpoch) ? $localEpoch : 0;

    $keys = tether_keys();
    $incoming = $_SERVER['HTTP_X_TETHER_REHYDRATE'] ?? ''; // any spelling: X-Tether-Rehydrate, X_Tether_Rehydrate, ...
    if (is_string($keys)) {
        error_log("tether: $keys: no session checkpoint is sent and no X-Tether-Rehydrate is restored"
            . ' (set TETHER_STATE_SECRET, the same on every replica, e.g. from `openssl rand -hex 32`)');
        $outcome = "disabled: $keys";
    } elseif (!is_string($incoming) || $incoming === '') {
        $outcome = 'none';
    } else {
        $state = tether_verify_state($incoming, $keys, $presentedId, $local, $localEpoch);
        if (is_array($state)) {
            $_SESSION = $state; // replaces the (new or older) local copy
            $outcome = 'restored';
        } else {
            error_log("tether: X-Tether-Rehydrate ignored: $state (the local session goes on)");
            $outcome = "ignored: $state";
        }
    }
    $_SESSION[TETHER_VERSION_KEY] = (int) ($_SESSION[TETHER_VERSION_KEY] ?? 0) + 1; // once per request, under the session lock
    $epoch = $_SERVER['HTTP_X_TETHER_EPOCH'] ?? '';
    // the highest epoch seen: a key Tether places again after its pin expired starts again at 0
    if (is_string($epoch) && preg_match('/^\d{1,15}$/', $epoch) === 1) $_SESSION[TETHER_EPOCH_KEY] = max((int) $epoch, (int) ($_SESSION[TETHER_EPOCH_KEY] ?? 0));
    if (!is_string($keys)) {
        ob_start();
        register_shutdown_function('tether_session_checkpoint');
    }
    return $outcome;
}

/** Add the checkpoint headers (runs at shutdown; call it yourself before any flush()). */
function tether_session_checkpoint(): void
{
    static $done = false;
    if ($done || headers_sent() || !isset($_SESSION) || !is_array($_SESSION)) return;
    $done = true;
    $keys = tether_keys();
    if (is_string($keys) || session_id() === '') return; // no secret (logged by tether_session_start()), or the session was destroyed
    $value = tether_encode_state(session_id(), $_SESSION, $keys[0]);
    if ($value === null) {
        error_log('tether: the session is not JSON-encodable (' . json_last_error_msg() . '); no checkpoint sent');
        return;
    }
    header('X-Tether-State: ' . $value);
    header('X-Tether-State-Version: ' . (int) $_SESSION[TETHER_VERSION_KEY]);
}
