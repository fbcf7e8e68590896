<?php
// Tether state rehydration for Laravel sessions (a starting point; see README.md).
// Register it in the "web" group right after StartSession and before the CSRF check.

namespace App\Http\Middleware;

use Closure;
use Illuminate\Contracts\Session\Session;
use Illuminate\Http\Request;
use Illuminate\Support\Arr;
use Symfony\Component\HttpFoundation\Response;

class TetherSessionState
{
    private const VERSION = '__tether_version';

    public function handle(Request $request, Closure $next): Response
    {
        $session = $request->session();
        $state = $this->decode((string) $request->header('X-Tether-Rehydrate', ''));
        if ($state !== null && $state[self::VERSION] > (int) $session->get(self::VERSION, 0)) {
            $session->flush(); // the checkpoint replaces the new (or older) local session
            $session->put($state);
        }
        $session->put(self::VERSION, (int) $session->get(self::VERSION, 0) + 1); // once per request

        $response = $next($request);

        $value = $this->encode($this->snapshot($session));
        if ($value !== null) {
            $response->headers->set('X-Tether-State', $value);
            $response->headers->set('X-Tether-State-Version', (string) $session->get(self::VERSION));
        }
        return $response;
    }

    /** The session as StartSession will save it (flash data aged), without objects. */
    private function snapshot(Session $session): array
    {
        $all = array_filter($session->all(), fn ($v) => ! is_object($v)); // e.g. a flashed ViewErrorBag
        Arr::forget($all, $all['_flash']['old'] ?? []);
        $all['_flash'] = ['old' => $all['_flash']['new'] ?? [], 'new' => []];
        return $all;
    }

    /** base64url(JSON) . '.' . base64url(HMAC-SHA256 with APP_KEY); null when not JSON-encodable. */
    private function encode(array $state): ?string
    {
        $json = json_encode($state, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION);
        if ($json === false) return null;
        $body = $this->b64($json);
        return $body . '.' . $this->b64(hash_hmac('sha256', $body, (string) config('app.key'), true));
    }

    private function decode(string $value): ?array
    {
        [$body, $mac] = array_pad(explode('.', $value, 2), 2, '');
        if ($body === '' || ! hash_equals($this->b64(hash_hmac('sha256', $body, (string) config('app.key'), true)), $mac)) return null;
        $state = json_decode((string) base64_decode(strtr($body, '-_', '+/'), true), true, 64);
        return is_array($state) && is_int($state[self::VERSION] ?? null) ? $state : null;
    }

    private function b64(string $bytes): string
    {
        return rtrim(strtr(base64_encode($bytes), '+/', '-_'), '=');
    }
}
