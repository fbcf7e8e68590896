<?php
// Tether state rehydration for Laravel sessions (README.md): every answer carries a signed
// checkpoint of the session (X-Tether-State); when Tether moves a user to another replica it
// delivers the newest one (X-Tether-Rehydrate), restored here only if it verifies.
// Register it in the `web` group right after StartSession and before the CSRF check.

namespace App\Http\Middleware;

use Closure;
use Illuminate\Contracts\Session\Session;
use Illuminate\Http\Request;
use Illuminate\Support\Arr;
use Symfony\Component\HttpFoundation\Response;

/**
 * Checkpoint format: `v1.<base64url(JSON envelope)>.<base64url(HMAC-SHA256)>` where the
 * envelope is {"sid": session id, "at": unix seconds, "s": the session as it will be saved}
 * and the MAC covers `v1.<body>` with a key derived from APP_KEY:
 * HMAC-SHA256(key: APP_KEY's bytes, message: "tether-session-state-v1").
 *
 * A delivered checkpoint replaces the local session only when all of these hold, else it is
 * ignored and the request goes on with the local session:
 * - its MAC verifies (constant-time) under APP_KEY or one of `app.previous_keys`;
 * - it belongs to this request's session id (no other user's state, whatever the proxy does);
 * - it is at most `session.lifetime` old (and not from the future);
 * - it is newer than the local session by its Tether epoch (`__tether_epoch`, the highest
 *   X-Tether-Epoch of the requests that wrote it: the user moved since the local copy was
 *   written, whatever its version) or by its version (`__tether_version`, bumped once per
 *   request); a copy older by both (a burst moved together, a replayed checkpoint) is not.
 * What happened is in the request attribute `tether.rehydrate`: `none`, `restored`, or
 * `ignored: <reason>`.
 */
class TetherSessionState
{
    /** Session key of the checkpoint version. */
    public const VERSION = '__tether_version';
    /** Session key of the Tether epoch of the request that last wrote the session. */
    public const EPOCH = '__tether_epoch';
    /** Request attribute: what became of an X-Tether-Rehydrate header. */
    public const OUTCOME = 'tether.rehydrate';
    /** Tether's `state.header` (its default). */
    public const STATE_HEADER = 'X-Tether-State';
    public const REHYDRATE_HEADER = 'X-Tether-Rehydrate';
    private const FORMAT = 'v1';
    private const KEY_CONTEXT = 'tether-session-state-v1';
    /** Seconds a checkpoint may be ahead of this replica's clock. */
    private const CLOCK_SKEW = 60;

    public function handle(Request $request, Closure $next): Response
    {
        $session = $request->session();
        $incoming = (string) $request->headers->get(self::REHYDRATE_HEADER, '');
        $outcome = $incoming === '' ? 'none' : $this->restore($session, $incoming);
        $request->attributes->set(self::OUTCOME, $outcome);
        $session->put(self::VERSION, $this->version($session->get(self::VERSION)) + 1); // once per request
        $epoch = (string) $request->headers->get('X-Tether-Epoch', '');
        if (preg_match('/^\d{1,15}$/', $epoch) === 1) {
            // the highest epoch seen: a key Tether places again after its pin expired starts again at 0
            $session->put(self::EPOCH, max((int) $epoch, $this->version($session->get(self::EPOCH))));
        }

        $response = $next($request);

        $value = $this->encode($session);
        if ($value !== null) {
            $response->headers->set(self::STATE_HEADER, $value);
            $response->headers->set(self::STATE_HEADER . '-Version', (string) $session->get(self::VERSION));
        }
        return $response;
    }

    /** Replace the local session with a verified, newer checkpoint of the same session. */
    private function restore(Session $session, string $value): string
    {
        $envelope = $this->decode($value);
        if (is_string($envelope)) {
            return "ignored: $envelope";
        }
        if (!hash_equals($session->getId(), $envelope['sid'])) {
            return 'ignored: another session';
        }
        $age = time() - $envelope['at'];
        if ($age > 60 * (int) config('session.lifetime', 120) || $age < -self::CLOCK_SKEW) {
            return 'ignored: expired';
        }
        $epoch = $this->version($envelope['s'][self::EPOCH] ?? 0);
        $localEpoch = $this->version($session->get(self::EPOCH));
        if ($epoch <= $localEpoch && $envelope['s'][self::VERSION] <= $this->version($session->get(self::VERSION))) {
            return 'ignored: not newer';
        }
        $session->flush(); // the checkpoint replaces the new (or older) local session, _token included
        $session->put($envelope['s']);
        return 'restored';
    }

    /** The checkpoint of the session as StartSession will save it; null when it cannot be encoded. */
    private function encode(Session $session): ?string
    {
        $keys = $this->keys();
        if ($keys === []) {
            return null; // no APP_KEY: nothing to sign with (Laravel cannot encrypt cookies either)
        }
        $envelope = ['sid' => $session->getId(), 'at' => time(), 's' => $this->snapshot($session)];
        $json = json_encode($envelope, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION);
        if ($json === false) {
            app('log')->warning('tether: the session is not JSON-encodable (' . json_last_error_msg() . '); no checkpoint sent');
            return null;
        }
        $signed = self::FORMAT . '.' . $this->b64($json);
        return $signed . '.' . $this->b64(hash_hmac('sha256', $signed, $keys[0], true));
    }

    /** The envelope of a checkpoint that verifies and is well-formed, or why not. */
    private function decode(string $value)
    {
        $parts = explode('.', trim($value));
        if (count($parts) !== 3 || $parts[0] !== self::FORMAT) {
            return 'malformed';
        }
        $signed = $parts[0] . '.' . $parts[1];
        $verified = false;
        foreach ($this->keys() as $key) {
            // every key is tried, so the time taken does not tell which one matched
            $verified = hash_equals($this->b64(hash_hmac('sha256', $signed, $key, true)), $parts[2]) || $verified;
        }
        if (!$verified) {
            return 'signature';
        }
        $json = base64_decode(strtr($parts[1], '-_', '+/'), true);
        $envelope = $json === false ? null : json_decode($json, true, 64);
        $ok = is_array($envelope) && is_string($envelope['sid'] ?? null) && is_int($envelope['at'] ?? null)
            && is_array($envelope['s'] ?? null) && is_int($envelope['s'][self::VERSION] ?? null);
        return $ok ? $envelope : 'malformed';
    }

    /**
     * The session as StartSession will save it: flash data aged (the keys in `_flash.old`
     * removed, `_flash.new` moved to `_flash.old`), so a flash message shows once after a
     * move; values holding objects (a flashed ViewErrorBag) left out, since JSON would turn
     * them into arrays.
     */
    private function snapshot(Session $session): array
    {
        $all = array_filter($session->all(), function ($v) {
            return $this->plain($v);
        });
        Arr::forget($all, $all['_flash']['old'] ?? []);
        $all['_flash'] = ['old' => $all['_flash']['new'] ?? [], 'new' => []];
        return $all;
    }

    /** Scalars, null, and arrays of those. */
    private function plain($value): bool
    {
        if (is_array($value)) {
            foreach ($value as $v) {
                if (!$this->plain($v)) {
                    return false;
                }
            }
            return true;
        }
        return $value === null || is_scalar($value);
    }

    /** Signing keys: from APP_KEY first (used to sign), then from `app.previous_keys` (Laravel 11+). */
    private function keys(): array
    {
        $keys = [];
        foreach (array_merge([config('app.key')], (array) config('app.previous_keys', [])) as $appKey) {
            $appKey = (string) $appKey;
            if (strncmp($appKey, 'base64:', 7) === 0) {
                $appKey = (string) base64_decode(substr($appKey, 7), true);
            }
            if ($appKey !== '') {
                $keys[] = hash_hmac('sha256', self::KEY_CONTEXT, $appKey, true);
            }
        }
        return $keys;
    }

    private function version($value): int
    {
        return is_int($value) ? $value : 0;
    }

    private function b64(string $bytes): string
    {
        return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
    }
}
