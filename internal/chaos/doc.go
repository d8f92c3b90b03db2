// Package chaos is minuted's chaos suite. Its tests build the minuted
// binary and run real processes — `minuted ingest` per Asterisk, two
// `minuted bill` — over a real nats-server process and a private
// redis-server (AOF, appendfsync always), feed them a seeded randomised
// workload from the ARI double (internal/sim, in the test process, so the
// test knows the truth of every call) and inject faults at random moments:
// kill -9 of bill and ingest, Redis killed, unreachable and slow, NATS
// restarted, the ARI websocket dropped, Asterisk unreachable or crashed,
// duplicated and reordered deliveries, garbage messages. After the run it
// drains the system and checks the invariants of SPEC §5 and §6: every call
// billed exactly billed(talk) (or, where its end had to be estimated,
// within the gap and flagged), balances = top-ups − Σ billed, ledger
// entries adding up per call and per project, no alert twice, and the
// dead-letter stream holding exactly the garbage injected.
//
// Knobs (environment): MINUTED_CHAOS_CALLS (virtual-time calls, default
// 10000), MINUTED_CHAOS_SEED (default 1), MINUTED_CHAOS_DURATION (fault
// period, default 25s), MINUTED_CHAOS_REPORT (write the fault table and
// totals there as Markdown), MINUTED_CHAOS_LOGS (copy every process log
// into that directory), MINUTED_CHAOS_FAULTS (all, the default: every fault
// kind; basic: without kill -9 of ingest and NATS restarts).
package chaos
