<?php
// Tether state rehydration for native PHP sessions ($_SESSION, any save handler).
//
//   require __DIR__ . '/tether.php';
//   $rehydrated = tether_session_start();   // instead of session_start()
//
// Checkpoint (every answer): X-Tether-State: base64url(JSON of $_SESSION) and
// X-Tether-State-Version: $_SESSION['__tether_version'] (bumped once per request, under the
// session lock). Rehydrate: when Tether moves the user here it sends the newest checkpoint in
// X-Tether-Rehydrate; it replaces the local session only if its __tether_version is higher.
// With TETHER_STATE_SECRET set (the same on every replica), the value carries an HMAC and an
// X-Tether-Rehydrate that does not verify is ignored.
declare(strict_types=1);

const TETHER_VERSION_KEY = '__tether_version';

function tether_b64url_encode(string $bytes): string
{
    return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
}

function tether_b64url_decode(string $text): ?string
{
    if (preg_match('/^[A-Za-z0-9_-]*$/', $text) !== 1) return null;
    $bytes = base64_decode(strtr($text, '-_', '+/'), true);
    return $bytes === false ? null : $bytes;
}

/** The header value for a session array: base64url(JSON)[.base64url(HMAC-SHA256)]; null if not encodable. */
function tether_encode_state(array $session): ?string
{
    $json = json_encode($session, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION);
    if ($json === false) return null; // e.g. invalid UTF-8 or resources: no checkpoint rather than a wrong one
    $value = tether_b64url_encode($json);
    $secret = (string) getenv('TETHER_STATE_SECRET');
    return $secret === '' ? $value : $value . '.' . tether_b64url_encode(hash_hmac('sha256', $value, $secret, true));
}

/** The session array in a header value, or null when malformed or (with a secret) not signed by it. */
function tether_decode_state(string $value): ?array
{
    $secret = (string) getenv('TETHER_STATE_SECRET');
    $parts = explode('.', trim($value));
    if ($secret !== '') {
        if (count($parts) !== 2) return null;
        $mac = tether_b64url_encode(hash_hmac('sha256', $parts[0], $secret, true));
        if (!hash_equals($mac, $parts[1])) return null;
    } elseif (count($parts) !== 1) {
        return null;
    }
    $json = tether_b64url_decode($parts[0]);
    $session = $json === null ? null : json_decode($json, true, 64);
    return is_array($session) && is_int($session[TETHER_VERSION_KEY] ?? null) ? $session : null;
}

/**
 * session_start() plus rehydration; returns true when this request restored a checkpoint.
 * Starts output buffering so the checkpoint headers can still be sent at the end.
 */
function tether_session_start(array $options = []): bool
{
    if (session_status() !== PHP_SESSION_ACTIVE && !session_start($options)) return false;
    $rehydrated = false;
    $incoming = $_SERVER['HTTP_X_TETHER_REHYDRATE'] ?? null;
    if (is_string($incoming) && $incoming !== '') {
        $state = tether_decode_state($incoming);
        $local = $_SESSION[TETHER_VERSION_KEY] ?? 0;
        if ($state !== null && $state[TETHER_VERSION_KEY] > (is_int($local) ? $local : 0)) {
            $_SESSION = $state; // replaces the (new or older) local copy
            $rehydrated = true;
        }
    }
    $_SESSION[TETHER_VERSION_KEY] = (int) ($_SESSION[TETHER_VERSION_KEY] ?? 0) + 1;
    ob_start();
    register_shutdown_function('tether_session_checkpoint');
    return $rehydrated;
}

/** Add the checkpoint headers (runs at shutdown; call it yourself before any flush()). */
function tether_session_checkpoint(): void
{
    static $done = false;
    if ($done || headers_sent() || !isset($_SESSION) || !is_array($_SESSION)) return;
    $done = true;
    $value = tether_encode_state($_SESSION);
    if ($value === null) {
        error_log('tether: the session is not JSON-encodable; no checkpoint sent');
        return;
    }
    header('X-Tether-State: ' . $value);
    header('X-Tether-State-Version: ' . (int) $_SESSION[TETHER_VERSION_KEY]);
}
