<?php

return [
    'name' => 'tether-laravel-demo',
    'env' => 'production',
    'debug' => false,
    'url' => 'http://localhost',
    'timezone' => 'UTC',
    'locale' => 'en',
    'fallback_locale' => 'en',
    // The same key on every replica (as in any multi-pod deployment); TetherSessionState
    // derives its checkpoint signing key from it.
    'key' => getenv('APP_KEY') ?: 'base64:dGV0aGVyLWRlbW8tYXBwLWtleS1ub3QtYS1zZWNyZXQ=',
    'cipher' => 'AES-256-CBC',
    'providers' => [
        Illuminate\Cookie\CookieServiceProvider::class,
        Illuminate\Encryption\EncryptionServiceProvider::class,
        Illuminate\Filesystem\FilesystemServiceProvider::class,
        Illuminate\Session\SessionServiceProvider::class,
        Illuminate\Translation\TranslationServiceProvider::class,
        Illuminate\View\ViewServiceProvider::class,
        App\Providers\RouteServiceProvider::class,
    ],
    'aliases' => [],
];
