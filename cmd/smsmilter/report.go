package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/smsmilter/smsmilter/internal/config"
	"github.com/smsmilter/smsmilter/internal/store"
)

func reportCommands() []command {
	return []command{
		{name: "log", args: "[--json] [--kind KIND] [--since DURATION] [--limit N]", run: cmdLog,
			summary: "show events: accepted, refused, sent, failed, replies, new IPs",
			help: `Shows the event log, oldest first.

  --json            one JSON object per line
  --kind KIND       only accepted, refused, sent, failed, reply, new_ip,
                    verdict, receipt, config or registry events
  --since DURATION  only events of the last DURATION (e.g. 1h, 7d is 168h)
  --limit N         only the newest N events (default 200; 0 = all)`},
		{name: "queue", args: "[--json] [--state STATE] [--limit N]", run: cmdQueue,
			summary: "show SMS jobs and their states",
			help: `Shows SMS jobs, newest first, with their parts.

  --json         one JSON object per line
  --state STATE  only queued, sending, sent, delivered or failed jobs
  --limit N      at most N jobs (default 100; 0 = all)`},
	}
}

// eventKinds and jobStates are what --kind and --state accept: a typo
// would otherwise show an empty list.
var (
	eventKinds = []string{store.EventAccepted, store.EventRefused, store.EventSent, store.EventFailed, store.EventReply,
		store.EventNewIP, store.EventVerdict, store.EventReceipt, store.EventConfig, store.EventRegistry}
	jobStates = []string{store.JobQueued, store.JobSending, store.JobSent, store.JobDelivered, store.JobFailed}
)

func cmdLog(a *app, args []string) int {
	fs := flag.NewFlagSet("log", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "JSON lines")
	kind := fs.String("kind", "", "event kind")
	since := fs.Duration("since", 0, "only the last DURATION")
	limit := fs.Int("limit", 200, "newest N")
	pos, ok := a.parseFlags(fs, "log", args)
	if !ok {
		return exitUsage
	}
	if len(pos) > 0 {
		return a.usageError("log", "log takes no arguments (got %q)", pos[0])
	}
	if *kind != "" && !slices.Contains(eventKinds, *kind) {
		return a.usageError("log", "--kind %q: want one of %s", *kind, strings.Join(eventKinds, ", "))
	}
	if *since < 0 || *limit < 0 {
		return a.usageError("log", "--since and --limit must not be negative")
	}
	return a.withStore(func(cfg *config.Config, st store.Store) int {
		var from time.Time
		if *since > 0 {
			from = time.Now().Add(-*since)
		}
		evs, err := st.ListEvents(a.ctx, *kind, from, *limit)
		if err != nil {
			return a.storeError(err)
		}
		if *asJSON {
			enc := json.NewEncoder(a.stdout)
			for _, e := range evs {
				enc.Encode(map[string]any{"id": e.ID, "time": e.Time.UTC().Format(time.RFC3339Nano), "kind": e.Kind, "message": e.Message, "fields": e.Fields})
			}
			return exitOK
		}
		for _, e := range evs {
			fmt.Fprintf(a.stdout, "%s  %-9s %s%s\n", e.Time.Local().Format("2006-01-02 15:04:05"), e.Kind, e.Message, fieldText(e.Fields))
		}
		return exitOK
	})
}

func fieldText(f map[string]string) string {
	if len(f) == 0 {
		return ""
	}
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("  [")
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%s", k, f[k])
	}
	b.WriteString("]")
	return b.String()
}

func cmdQueue(a *app, args []string) int {
	fs := flag.NewFlagSet("queue", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "JSON lines")
	state := fs.String("state", "", "job state")
	limit := fs.Int("limit", 100, "at most N")
	pos, ok := a.parseFlags(fs, "queue", args)
	if !ok {
		return exitUsage
	}
	if len(pos) > 0 {
		return a.usageError("queue", "queue takes no arguments (got %q)", pos[0])
	}
	if *state != "" && !slices.Contains(jobStates, *state) {
		return a.usageError("queue", "--state %q: want one of %s", *state, strings.Join(jobStates, ", "))
	}
	if *limit < 0 {
		return a.usageError("queue", "--limit must not be negative")
	}
	return a.withStore(func(cfg *config.Config, st store.Store) int {
		jobs, err := st.ListJobs(a.ctx, *state, *limit)
		if err != nil {
			return a.storeError(err)
		}
		if *asJSON {
			enc := json.NewEncoder(a.stdout)
			for _, j := range jobs {
				parts := make([]map[string]any, 0, len(j.PartState))
				for _, p := range j.PartState {
					parts = append(parts, map[string]any{"index": p.Index, "ref": p.Ref, "state": p.State, "error": p.Error})
				}
				enc.Encode(map[string]any{
					"id": j.ID, "state": j.State, "to": j.To, "from": j.SenderID, "user": j.User, "sender": j.Sender,
					"message_id": j.MessageID, "queue_id": j.QueueID, "text": j.Text, "encoding": j.Encoding, "parts": j.Parts,
					"attempts": j.Attempts, "transport": j.Transport, "last_error": j.LastError,
					"created": j.Created.UTC().Format(time.RFC3339), "next_try": j.NextTry.UTC().Format(time.RFC3339),
					"updated": j.Updated.UTC().Format(time.RFC3339), "part_states": parts,
				})
			}
			return exitOK
		}
		depth, err := st.Depth(a.ctx)
		if err != nil {
			return a.storeError(err)
		}
		w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "ID\tSTATE\tTO\tFROM\tUSER\tPARTS\tTRIES\tTRANSPORT\tCREATED\tNOTE")
		for _, j := range jobs {
			note := j.LastError
			if j.State == store.JobQueued && j.Attempts > 0 {
				note = "next try " + j.NextTry.Local().Format("15:04:05") + ": " + note
			}
			parts := fmt.Sprint(j.Parts)
			if len(j.PartState) > 0 {
				var ps []string
				for _, p := range j.PartState {
					ps = append(ps, p.State)
				}
				parts += " (" + strings.Join(ps, ",") + ")"
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", j.ID, j.State, j.To, j.SenderID, j.User, parts, j.Attempts,
				orDash(j.Transport != "", j.Transport), j.Created.Local().Format("2006-01-02 15:04:05"), oneLine(note, 60))
		}
		w.Flush()
		var states []string
		for _, s := range []string{store.JobQueued, store.JobSending, store.JobSent, store.JobDelivered, store.JobFailed} {
			states = append(states, fmt.Sprintf("%s %d", s, depth[s]))
		}
		fmt.Fprintf(a.stdout, "\n%s\n", strings.Join(states, ", "))
		return exitOK
	})
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}
