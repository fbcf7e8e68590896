// How many worker processes `workers: auto` means: the CPUs this process may use, honouring a
// container's CPU limit (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`, as Kubernetes sets them).
// Layer 3 adapter: reads /sys/fs/cgroup; the arithmetic is exported pure for tests.
import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'

/**
 * CPUs a cgroup quota allows: `quota / period` rounded up, at least 1; null when unlimited
 * ("max", or v1's -1) or unreadable. Example: `cpusOfQuota('150000 100000')` -> 2.
 */
export function cpusOfQuota(cpuMax: string): number | null {
  const [quota, period] = cpuMax.trim().split(/\s+/)
  const q = Number(quota)
  const p = Number(period ?? 100_000)
  if (quota === 'max' || !Number.isFinite(q) || q <= 0 || !Number.isFinite(p) || p <= 0) return null
  return Math.max(1, Math.ceil(q / p))
}

/** Reads a file's text, or null (missing, not permitted). */
type ReadText = (path: string) => string | null

const readText: ReadText = (path) => {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return null
  }
}

/**
 * The CPUs available: the machine's (`availableParallelism`, which follows the CPU affinity
 * mask), lowered to the cgroup's quota when one is set.
 * Example: a pod with `limits.cpu: 2` on a 16-core node -> 2.
 */
export function availableCpus(read: ReadText = readText, cores: number = availableParallelism()): number {
  const v2 = read('/sys/fs/cgroup/cpu.max')
  const v1 = v2 === null ? read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us') : null
  const v1Period = v1 === null ? null : read('/sys/fs/cgroup/cpu/cpu.cfs_period_us')
  const quota = v2 !== null ? cpusOfQuota(v2) : v1 !== null ? cpusOfQuota(`${v1.trim()} ${v1Period?.trim() ?? '100000'}`) : null
  return Math.max(1, quota === null ? cores : Math.min(cores, quota))
}

/** The worker count a `workers` setting means. Example: `workerCount('auto')` on 2 CPUs -> 2; `workerCount(3)` -> 3. */
export function workerCount(setting: number | 'auto', cpus: () => number = availableCpus): number {
  return setting === 'auto' ? cpus() : setting
}
