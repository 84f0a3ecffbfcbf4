// Package milter is the milter session smsmilter runs for Postfix and
// Sendmail: it collects each message, decides which SMS to queue and what to
// answer, and commits the SMS jobs to the store before the end-of-message
// reply (DESIGN.md §2).
package milter
