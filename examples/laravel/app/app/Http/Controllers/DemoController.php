<?php

namespace App\Http\Controllers;

use Illuminate\Http\Request;

class DemoController
{
    /**
     * Counts the visit and shows the session: HTML with the forms for a browser, the same
     * fields as JSON for `Accept: application/json` (the tests).
     */
    public function home(Request $request)
    {
        $session = $request->session();
        $session->put('count', (int) $session->get('count', 0) + 1);
        $state = [
            'replica' => getenv('REPLICA_ID') ?: gethostname(),
            'count' => $session->get('count'),
            'token' => $session->token(),
            'flash' => $session->get('status'),
            'note' => $session->get('note'),
            'user' => $session->get('user'),
            'rehydrate' => $request->attributes->get('tether.rehydrate', 'none'),
        ];
        if ($request->wantsJson()) {
            return response()->json($state);
        }
        $e = function ($v) {
            return htmlspecialchars((string) $v, ENT_QUOTES);
        };
        $token = $e($state['token']);
        $flash = $state['flash'] === null ? '' : '<p class="flash">' . $e($state['flash']) . '</p>';
        $html = <<<HTML
<!doctype html>
<title>Tether + Laravel</title>
{$flash}
<p>Replica <b>{$e($state['replica'])}</b>, visit <b>{$e($state['count'])}</b>, user <b>{$e($state['user'] ?? '-')}</b>,
note <b>{$e($state['note'] ?? '-')}</b>, rehydration: {$e($state['rehydrate'])}</p>
<p>CSRF token: <code>{$token}</code></p>
<form method="post" action="/note"><input type="hidden" name="_token" value="{$token}">
<input name="note" placeholder="a note"> <button>Save note</button></form>
<form method="post" action="/login"><input type="hidden" name="_token" value="{$token}">
<input name="name" placeholder="a name"> <button>Log in</button></form>
HTML;
        return response($html);
    }

    /** Stores a note and flashes a message for the next page (POST, CSRF-checked). */
    public function note(Request $request)
    {
        $note = (string) $request->input('note', '');
        $request->session()->put('note', $note);
        return redirect('/')->with('status', "Saved: $note");
    }

    /** A login-like step: a user name in the session, and a new session id (as Laravel's auth does). */
    public function login(Request $request)
    {
        $request->session()->regenerate();
        $request->session()->put('user', (string) $request->input('name', ''));
        return redirect('/')->with('status', 'Logged in');
    }
}
