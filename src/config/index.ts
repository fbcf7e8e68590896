// Public face of the config module: load (file or text), the error type, the duration parser
// and the schema vocabulary. Nothing outside src/config reads YAML or process.env for config.

export { decodeYamlBytes, inputErrorReason, inputName, loadConfigFile, notYamlText, parseConfig, parseConfigFile, parseYamlDocuments, parseYamlParts, plainValue, readConfigFile, readConfigText, readErrorReason, readInput, toYaml } from './load.js'
export { CONFIG_WARNING, ConfigError, configWarnings, didYouMean, escapeControls, nearest } from './validate.js'
export type { ConfigFiles, Pos, ScalarValue, SourceEntry, SourceNode } from './validate.js'
export type { DecodedText, YamlPart } from './load.js'
export { formatDuration, parseDuration } from './duration.js'
export { DEFAULTS } from './schema.js'
export type * from './schema.js'
