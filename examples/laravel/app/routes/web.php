<?php
// The demo: a visit counter in the session, a form protected by CSRF with a flash message
// after it, and a login-like value. Everything lives in this replica's file session.

use App\Http\Controllers\DemoController;
use Illuminate\Support\Facades\Route;

Route::get('/', [DemoController::class, 'home']);
Route::post('/note', [DemoController::class, 'note']);
Route::post('/login', [DemoController::class, 'login']);
