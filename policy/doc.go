// Package policy decides whether a sender may send SMS: it computes the
// DKIM, SPF and DMARC verdicts (or believes trusted Authentication-Results),
// finds the matching rule (address > domain > ip) and applies its security
// type and thresholds (DESIGN.md §4).
//
// Checks run lazily, at most once per message, and only when the matched
// rule needs them (its security type, or a threshold above fail), so a
// message from a trusted IP costs no DNS lookups. A DNS temporary error in
// a needed check makes Decide return a 451 instead of a verdict; a refusal
// that is already certain for another reason stands.
//
// Authentication-Results written under a trusted authserv-id are believed
// only when bound to this transaction ("ID/QUEUEID", as OpenDKIM and
// OpenDMARC write with AuthservIDWithJobID) or when the admin declared that
// the milter before us strips forged ones: the MTA shows a milter the
// client's own headers too, so the id alone proves nothing.
package policy
