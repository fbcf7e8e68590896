// Module hooks (node:module register) that run this project's TypeScript in a test process:
// src/**/*.ts and test/**/*.ts are served from the JavaScript `tsc -p tsconfig.test.json`
// already emitted into .test-build/ (same URL, so import.meta.url, module identity and stack
// traces are unchanged), and transpiled here with TypeScript when that output is missing or
// older than the .ts file. It must not type-check (tsc does), touch other files, or write.
// Registered by scripts/ts-loader.mjs; see docs/development.md (Tests).
import { readFile, stat } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { basename, dirname, join, relative, sep } from 'node:path'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
/** Where tsconfig.test.json emits (its outDir, with rootDir "."). */
export const BUILD = join(ROOT, '.test-build')
const SERVED = [join(ROOT, 'src') + sep, join(ROOT, 'test') + sep]

/** The project .ts file behind a file: URL (query and hash dropped), or null. */
function projectTs(url) {
  if (!url.startsWith('file:')) return null
  const u = new URL(url)
  if (!u.pathname.endsWith('.ts') || u.pathname.endsWith('.d.ts')) return null
  u.search = ''
  u.hash = ''
  const path = fileURLToPath(u)
  return SERVED.some((dir) => path.startsWith(dir)) ? path : null
}

/**
 * `./x.js` written in a project .ts file means `./x.ts` (TypeScript's NodeNext rule, as with
 * ts-node): a relative .js specifier whose .ts sibling exists resolves to the .ts file.
 */
export async function resolve(specifier, context, next) {
  const parent = context.parentURL
  if (parent !== undefined && specifier.endsWith('.js') && (specifier.startsWith('./') || specifier.startsWith('../')) && projectTs(parent) !== null) {
    const ts = new URL(specifier.slice(0, -3) + '.ts', parent)
    if (existsSync(ts)) return { url: ts.href, format: 'module', shortCircuit: true }
  }
  return next(specifier, context)
}

/** .test-build's output for `path` when it is at least as new as `path`, else null. */
async function emitted(path) {
  const js = join(BUILD, relative(ROOT, path)).slice(0, -3) + '.js'
  try {
    const [ts, out] = await Promise.all([stat(path), stat(js)])
    if (out.mtimeMs < ts.mtimeMs) return null
    const [code, map] = await Promise.all([readFile(js, 'utf8'), readFile(js + '.map', 'utf8')])
    // the module's URL is the .ts file's: inline the map, its source being that file
    const payload = { ...JSON.parse(map), file: basename(path), sourceRoot: '', sources: [basename(path)] }
    const inline = `//# sourceMappingURL=data:application/json;charset=utf-8;base64,${Buffer.from(JSON.stringify(payload)).toString('base64')}`
    return code.replace(/^\/\/# sourceMappingURL=.+$/m, () => inline)
  } catch (err) {
    if (err?.code === 'ENOENT') return null
    throw err
  }
}

let compiler = null
/** TypeScript and tsconfig.json's compiler options, loaded on the first stale or missing file. */
async function loadCompiler() {
  if (compiler) return compiler
  const ts = (await import('typescript')).default
  const file = join(ROOT, 'tsconfig.json')
  const { config, error } = ts.readConfigFile(file, ts.sys.readFile)
  if (error) throw new Error(ts.flattenDiagnosticMessageText(error.messageText, '\n'))
  const { options } = ts.parseJsonConfigFileContent(config, ts.sys, dirname(file))
  compiler = {
    ts,
    // ES modules (the package is "type": "module"; transpileModule cannot see package.json),
    // the source map inline so that coverage and stack traces point at the .ts lines
    options: { ...options, module: ts.ModuleKind.ESNext, sourceMap: false, inlineSourceMap: true, inlineSources: true, declaration: false, noEmit: false },
  }
  return compiler
}

/** TypeScript to JavaScript for one file, without type checking (tsc checks). */
async function transpile(path) {
  const { ts, options } = await loadCompiler()
  const out = ts.transpileModule(await readFile(path, 'utf8'), { fileName: path, compilerOptions: options, reportDiagnostics: false })
  return out.outputText
}

/**
 * Serves a project .ts file as an ES module. The source goes down the chain (context.source,
 * which Node's own load returns as is) so that the hooks registered before this one, such as
 * tap's processinfo that records what was loaded for coverage, see the JavaScript that runs.
 */
export async function load(url, context, next) {
  const path = projectTs(url)
  if (path === null) return next(url, context)
  const source = (await emitted(path)) ?? (await transpile(path))
  return next(url, { ...context, format: 'module', source })
}
