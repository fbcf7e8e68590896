// A command that a Lua script calls, refused by the ACL user, is answered in another shape than a
// refused command: Redis 6.0-7.0 "ERR The user executing the script can't run this command or
// subcommand script: ...", Redis 7.2+ "ERR ACL failure in script: User <name> has no permissions
// to run the 'set' command script: ..." (src/script.c scriptVerifyACL, getAclErrorMessage not
// verbose: "No permissions to access a key" / "... a channel"). Each is told as a refusal with
// the grant to add and without the user's name, under the command it names (else the one sent),
// and is not watched as a command for an "accepted again" line: the script's command is never sent
// by itself (its end is told by the script's next success: test/redis-refusal-ends.test.ts).
// Pure: the reply texts (no 7.2 redis-server here: redis-noperm-commands.test.ts checks 7.0's live).
import t from 'tap'
import { authHint } from '../src/redis/auth-hint.js'
import { refusedCommand } from '../src/redis/reply-errors.js'

const grants = { keys: 'tether:*', channels: 'tether:*' }
const hint = (error: string): string => authHint(error, 'Redis', 'u', 'state.redis.username', 'state.redis.password', grants)

t.test('Redis 7.2+: a script\'s refused command is told with the command to grant, never the user\'s name', (t) => {
  const error = "ERR ACL failure in script: User tether-app has no permissions to run the 'set' command script: 5a1c0f, on @user_script:4."
  const told = hint(error)
  t.notMatch(told, /tether-app/, 'the user name left out')
  t.match(told, /\(Redis's ACL user may not run SET: grant it \(ACL SETUSER <user> \+set\), or check state\.redis\.username\)$/, 'the grant')
  t.match(hint('ERR ACL failure in script: No permissions to access a key script: 5a1c0f, on @user_script:4.'), /may not access the keys: grant them \(ACL SETUSER <user> ~tether:\*\)/, 'a key')
  t.match(hint('ERR ACL failure in script: No permissions to access a channel script: 5a1c0f, on @user_script:4.'), /may not use the channel: grant them \(ACL SETUSER <user> &tether:\*\)/, 'a channel')
  t.end()
})

t.test('an ordinary script error is no refusal (told as is)', (t) => {
  for (const error of [
    'WRONGTYPE Operation against a key holding the wrong kind of value script: 5a1c0f, on @user_script:1.',
    "OOM command not allowed when used memory > 'maxmemory'. script: 5a1c0f, on @user_script:1.",
    'ERR user_script:1: Script attempted to access nonexistent global variable \'x\' script: 5a1c0f, on @user_script:1.',
  ]) t.equal(hint(error), error, error)
  t.end()
})

t.test('the command a refusal is told under, and whether its next success is watched', (t) => {
  t.same(refusedCommand("NOPERM this user has no permissions to run the 'evalsha' command", 'evalsha'), { command: 'EVALSHA', watched: true }, 'a refused command: watched')
  t.same(refusedCommand("NOPERM User u has no permissions to run the 'object|encoding' command", 'object'), { command: 'OBJECT|ENCODING', watched: true }, 'a subcommand: by its full name')
  t.same(refusedCommand('NOPERM this user has no permissions to access one of the keys used as arguments', 'get'), { command: 'GET', watched: false }, 'a key: the command sent, not watched')
  t.same(refusedCommand("ERR The user executing the script can't run this command or subcommand script: 5a1c0f, on @user_script:1.", 'evalsha'), { command: 'EVALSHA', watched: false }, '7.0 script: the command sent')
  t.same(refusedCommand("ERR ACL failure in script: User u has no permissions to run the 'set' command script: 5a1c0f, on @user_script:4.", 'evalsha'), { command: 'SET', watched: false }, '7.2 script: the command named, not watched (never sent by itself)')
  t.same(refusedCommand('NOPERM this user has no permissions', undefined), { command: 'A COMMAND', watched: false }, 'nothing named nor sent')
  t.end()
})
