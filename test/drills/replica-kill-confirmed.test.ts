// Drill: `kill -9` of the busiest replica under load with the Redis checkpoint store and
// durability: confirmed (the drill and its settings: test/fixtures/replica-kill-drill.ts).
import t from 'tap'
import { killDrill } from '../fixtures/replica-kill-drill.js'

t.test('kill -9 of the busiest replica with the Redis store and durability confirmed: no failure, no loss, its users moved and rehydrated', async (t) => {
  await killDrill(t, 'kill-redis-confirmed', 'redis', 'confirmed')
})
