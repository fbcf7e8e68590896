<?php

namespace App\Exceptions;

use Illuminate\Foundation\Exceptions\Handler as ExceptionHandler;

/** Laravel's default handler (a 419 page for a CSRF token mismatch). */
class Handler extends ExceptionHandler
{
}
