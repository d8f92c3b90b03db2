package ledger

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

// Every balance change is one of these scripts. redis.Script.Run tries
// EVALSHA and falls back to EVAL on NOSCRIPT, so a flushed script cache (or
// a fresh replica after failover) reloads by itself. Each script touches
// only the keys of one project, all passed in KEYS and all carrying the
// hash tag {project}, so it runs unchanged on Redis Cluster.

//go:embed lua/common.lua
var commonLua string

//go:embed lua/put.lua
var putLua string

//go:embed lua/topup.lua
var topUpLua string

//go:embed lua/open.lua
var openLua string

//go:embed lua/debit.lua
var debitLua string

//go:embed lua/settle.lua
var settleLua string

var (
	putScript    = redis.NewScript(putLua)
	topUpScript  = redis.NewScript(commonLua + topUpLua)
	openScript   = redis.NewScript(commonLua + openLua)
	debitScript  = redis.NewScript(commonLua + debitLua)
	settleScript = redis.NewScript(commonLua + settleLua)
)
