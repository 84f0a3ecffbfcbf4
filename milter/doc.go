// Package milter is the milter session smsmilter runs for Postfix and
// Sendmail: it collects each message, decides which SMS to queue and what to
// answer, and commits the SMS jobs to the store before the end-of-message
// reply (DESIGN.md §2, §13).
//
// The protocol is github.com/emersion/go-milter v0.5.0, whose quirks
// (NOTES.md) shape the code:
//
//   - go-milter makes a new backend after every final answer; the Server
//     hands back one session per connection, reset, so a message's state
//     never depends on how the previous one ended. Per-recipient refusals
//     are custom replies, which go-milter does not treat as final.
//   - Its header map is cleared only by ABORT: the session keeps its own
//     header list, reset at MAIL.
//   - Macros are replaced per command and kept otherwise, even across
//     messages: a macro is read only in the callback whose command it came
//     with, so a queue ID (i) left from the previous message cannot bind an
//     Authentication-Results header of this one.
//   - It has no deadlines, limits or drain: Server bounds every packet and
//     answer by milter.timeout, refuses connections beyond
//     milter.max_connections, and drains on Shutdown.
//   - It checks no command order: the session does, and a command out of
//     order (or an unknown one) ends that connection only.
//
// Mail with no SMS recipient is accepted at its first header, so the MTA
// sends none of its body. Mail with one is counted as DESIGN.md §13 says
// and decided at end of message: sender policy (package policy), SMS text
// (package smstext), quota, then one durable Enqueue for all its jobs.
package milter
