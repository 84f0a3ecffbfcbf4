// Package policy decides whether a sender may send SMS: it computes the
// DKIM, SPF and DMARC verdicts (or believes trusted Authentication-Results),
// finds the matching rule (address > domain > ip) and applies its security
// type and thresholds (DESIGN.md §4).
package policy
