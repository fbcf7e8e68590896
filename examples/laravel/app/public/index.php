<?php
// Front controller of the demo app, and its router script under `php -S` (every request comes
// here). Laravel comes from Debian's php-laravel-framework (no Composer): its autoloader, plus
// a small one for the App\ classes. Each replica keeps its storage (file sessions) in
// APP_STORAGE, so replicas share no sessions, exactly like pods with local file sessions.
declare(strict_types=1);

define('LARAVEL_START', microtime(true));

// Debian's autoloader; LARAVEL_AUTOLOAD may name another one (a Composer vendor/autoload.php).
require getenv('LARAVEL_AUTOLOAD') ?: '/usr/share/php/Illuminate/autoload.php';

$base = dirname(__DIR__);
spl_autoload_register(function (string $class) use ($base): void {
    if ($class === 'App\\Http\\Middleware\\TetherSessionState') {
        require dirname($base) . '/TetherSessionState.php'; // the example's middleware, one copy
    } elseif (strncmp($class, 'App\\', 4) === 0) {
        $file = $base . '/app/' . str_replace('\\', '/', substr($class, 4)) . '.php';
        if (is_file($file)) require $file;
    }
});

$storage = getenv('APP_STORAGE') ?: $base . '/storage';
foreach (['framework/sessions', 'framework/views', 'framework/cache', 'logs'] as $dir) {
    if (!is_dir("$storage/$dir")) @mkdir("$storage/$dir", 0700, true);
}
// Laravel writes its provider and package manifests under bootstrap/cache by default: keep
// them per replica too (the example directory stays read-only).
foreach (['APP_SERVICES_CACHE' => 'services.php', 'APP_PACKAGES_CACHE' => 'packages.php'] as $name => $file) {
    $_ENV[$name] = $_SERVER[$name] = "$storage/framework/cache/$file";
}

/** @var \Illuminate\Foundation\Application $app */
$app = require $base . '/bootstrap/app.php';
$app->useStoragePath($storage);

$kernel = $app->make(Illuminate\Contracts\Http\Kernel::class);
$response = $kernel->handle($request = Illuminate\Http\Request::capture())->send();
$kernel->terminate($request, $response);
