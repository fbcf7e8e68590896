// Drill: `kill -9` of the busiest replica under load with the memory checkpoint store (the
// drill and its settings: test/fixtures/replica-kill-drill.ts; the Redis store:
// replica-kill-redis.test.ts and replica-kill-confirmed.test.ts).
import t from 'tap'
import { killDrill } from '../fixtures/replica-kill-drill.js'

t.test('kill -9 of the busiest replica with the memory store: no failure, no loss, its users moved and rehydrated', async (t) => {
  await killDrill(t, 'kill-memory', 'memory')
})
