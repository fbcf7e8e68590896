<?php

namespace App\Http;

use Illuminate\Contracts\Foundation\Application;
use Illuminate\Foundation\Http\Kernel as HttpKernel;
use Illuminate\Routing\Router;

/**
 * The HTTP kernel: Laravel 8's default `web` group with TetherSessionState inserted right
 * after StartSession and before the CSRF check. TETHER_MIDDLEWARE=off leaves it out (the
 * tests' control run: the same app without it answers 419 to a moved user's form).
 */
class Kernel extends HttpKernel
{
    protected $middleware = [];

    protected $middlewareGroups = [
        'web' => [
            \Illuminate\Cookie\Middleware\EncryptCookies::class,
            \Illuminate\Cookie\Middleware\AddQueuedCookiesToResponse::class,
            \Illuminate\Session\Middleware\StartSession::class,
            \App\Http\Middleware\TetherSessionState::class,
            \Illuminate\View\Middleware\ShareErrorsFromSession::class,
            \Illuminate\Foundation\Http\Middleware\VerifyCsrfToken::class,
            \Illuminate\Routing\Middleware\SubstituteBindings::class,
        ],
    ];

    public function __construct(Application $app, Router $router)
    {
        if (getenv('TETHER_MIDDLEWARE') === 'off') {
            $this->middlewareGroups['web'] = array_values(array_diff(
                $this->middlewareGroups['web'],
                [\App\Http\Middleware\TetherSessionState::class]
            ));
        }
        parent::__construct($app, $router);
    }
}
