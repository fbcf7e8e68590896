<?php
// Demo: a per-user visit counter in $_SESSION (file sessions, local to this replica).
declare(strict_types=1);
require __DIR__ . '/tether.php';

$outcome = tether_session_start(); // 'none', 'restored', 'ignored: <why>' or 'disabled: <why>'
$_SESSION['count'] = (int) ($_SESSION['count'] ?? 0) + 1;

header('Content-Type: application/json');
echo json_encode([
    'replica' => getenv('REPLICA_ID') ?: gethostname(),
    'count' => $_SESSION['count'],
    'rehydrate' => $outcome,
]), "\n";
