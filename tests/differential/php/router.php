<?php
// PHP built-in server upstream of the differential suite
// (php -S 127.0.0.1:PORT router.php, DIFF_LOG in the environment).
// Reports $_SERVER as PHP exposes it: REQUEST_URI, the area by a plain
// case-sensitive prefix match on the decoded path (how a small PHP router
// dispatches), and every HTTP_* entry (names lower-cased, '_' and '.' read
// as '-'). Of two equal headers PHP keeps the last one.
$uri = $_SERVER['REQUEST_URI'] ?? '';
$path = rawurldecode(parse_url($uri, PHP_URL_PATH) ?? '');
$area = 'other';
foreach (['public', 'admin-area', 'member-area'] as $a) {
    if (strncmp($path, "/$a/", strlen($a) + 2) === 0) { $area = $a; break; }
}
$headers = new stdClass();
foreach ($_SERVER as $k => $v) {
    if (strncmp($k, 'HTTP_', 5) === 0) {
        $name = str_replace(['_', '.'], '-', strtolower(substr($k, 5)));
        $headers->{$name}[] = (string) $v;
    }
}
$record = json_encode([
    'server' => 'php',
    'case' => $_SERVER['HTTP_X_DIFF_CASE'] ?? null,
    'area' => $area,
    'path' => $path,
    'uri' => $uri,
    'headers' => $headers,
], JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE);
$log = getenv('DIFF_LOG');
if ($log) { file_put_contents($log, $record . "\n", FILE_APPEND | LOCK_EX); }
header('Content-Type: application/json');
echo $record;
