package probecli

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/netprobe/netprobe/client"
	"github.com/netprobe/netprobe/internal/settings"
)

// repeatFlags ask for a probe again and again, as ping and tcping do.
type repeatFlags struct {
	count    int
	interval time.Duration
}

func (r *repeatFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.IntVarP(&r.count, "count", "c", 1, "probe this many times, a line each, then print a summary; 0 repeats until interrupted")
	settings.DurationVar(f, &r.interval, "interval", "i", time.Second, "time between the starts of two probes, with --count")
}

// repeating reports whether the flags ask for more than one probe.
func (r *repeatFlags) repeating() bool { return r.count != 1 }

// outcome is one probe of a repeated run.
type outcome struct {
	// line says what happened, for a probe that got a report.
	line string
	// took is the time the summary's statistics count.
	took time.Duration
	// json is the report, for -o json.
	json proto.Message
	err  error
	// stop ends the run after this probe: the next would fail as it did.
	stop bool
}

// repeatStyle is how a repeated run prints and ends: as connect's and
// fetch's ("probe 3: ..." and their summary), or as ping's.
type repeatStyle struct {
	// label begins the line of probe n (from 1).
	label func(n int) string
	// summary is the run's last lines, without the final newline.
	summary func(target string, sent, failed int, times []time.Duration) string
	// anyAnswer makes the run a success when any probe was, as ping's
	// exit status is; else it fails when any probe failed.
	anyAnswer bool
	// inFlightSent counts a probe that an interruption cut short as sent
	// and unanswered, as ping counts an echo it sent and got no reply to.
	inFlightSent bool
	// onlySent counts only the probes that ran: a call the server refused
	// (the policy, a limit, a bad request) sent nothing; it ends the run
	// with its error, after the summary of those sent before it, if any.
	onlySent bool
}

// probeStyle is connect's and fetch's.
var probeStyle = repeatStyle{
	label: func(n int) string { return fmt.Sprintf("probe %d: ", n) },
	summary: func(target string, sent, failed int, times []time.Duration) string {
		summary := fmt.Sprintf("--- %s: %s, %d failed, %.0f%% loss", target, plural(sent, "probe"), failed, percent(failed, sent))
		if len(times) > 0 {
			lo, avg, hi, mdev := stats(times)
			summary += fmt.Sprintf("; time min/avg/max/mdev = %s/%s/%s/%s", ms(lo), ms(avg), ms(hi), ms(mdev))
		}
		return summary
	},
}

// repeat runs probe rf.count times (forever for 0), rf.interval apart,
// prints a line for each and a summary at the end (also when
// interrupted). It fails as the last failed probe did, if any did; an
// interruption before any probe ended is exit 130.
func (a *app) repeat(ctx context.Context, rf repeatFlags, target string, probe func(context.Context) outcome) error {
	return a.repeatAs(ctx, rf, target, probeStyle, probe)
}

// repeatAs is repeat, printed and ended in style.
func (a *app) repeatAs(ctx context.Context, rf repeatFlags, target string, style repeatStyle, probe func(context.Context) outcome) error {
	if rf.count < 0 {
		return usagef("--count %d: want 0 (until interrupted) or more", rf.count)
	}
	if rf.interval <= 0 {
		return usagef("--interval %v: must be positive", rf.interval)
	}
	var (
		sent, failed     int
		lastErr, refusal error
		times            []time.Duration
	)
	next := time.Now()
	for rf.count == 0 || sent < rf.count {
		if sent > 0 {
			next = next.Add(rf.interval)
			wait := time.NewTimer(time.Until(next))
			select {
			case <-ctx.Done():
			case <-wait.C:
			}
			wait.Stop()
		}
		if ctx.Err() != nil {
			break
		}
		o := probe(ctx)
		if ctx.Err() != nil && o.err != nil {
			// Interrupted during this probe: it has no outcome to print
			// (but an echo was sent, and no reply came).
			if style.inFlightSent {
				sent++
				failed++
			}
			break
		}
		if style.onlySent && o.err != nil && !isProbeError(o.err) {
			refusal = o.err
			break
		}
		sent++
		if o.err != nil {
			failed++
			lastErr = o.err
		} else {
			times = append(times, o.took)
		}
		switch {
		case a.Output == "json" && o.json != nil:
			if err := writeJSON(a.out, o.json); err != nil {
				return err
			}
		case a.Output == "json":
		case o.err != nil:
			fmt.Fprintf(a.out, "%s%v\n", style.label(sent), o.err)
			var traced tracedError
			if errors.As(o.err, &traced) {
				fmt.Fprintf(a.out, "%s%s\n", style.label(sent), traced.where())
			}
		default:
			fmt.Fprintf(a.out, "%s%s\n", style.label(sent), o.line)
		}
		if o.stop || o.err != nil && !isProbeError(o.err) {
			// The probe server refused or failed the call, or cannot
			// probe at all: no point in asking again.
			break
		}
	}
	w := a.out
	if a.Output == "json" {
		w = a.err
	}
	if refusal != nil && sent == 0 {
		return refusal
	}
	fmt.Fprintln(w, style.summary(target, sent, failed, times))
	if refusal != nil {
		return refusal
	}
	if style.anyAnswer && failed < sent {
		return nil
	}
	if ctx.Err() != nil && (lastErr == nil && failed > 0 || sent == 0) {
		// Nothing ended that says how it went: an interrupted run is not
		// a success.
		return errInterrupted
	}
	if lastErr == nil {
		return nil
	}
	var pe *client.ProbeError
	if errors.As(lastErr, &pe) {
		return exitError{probeExitCode(pe), fmt.Sprintf("%d of %s failed, the last: %v", failed, plural(sent, "probe"), lastErr)}
	}
	return lastErr
}

// errInterrupted ends a repeated run interrupted before any probe ended,
// or before any echo was answered.
var errInterrupted = exitError{exitInterrupted, "interrupted before any answer"}

func percent(part, whole int) float64 {
	if whole == 0 {
		return 0
	}
	return 100 * float64(part) / float64(whole)
}

// stats returns the least, mean, greatest and mean deviation of ds, as
// ping reports them.
func stats(ds []time.Duration) (lo, avg, hi, mdev time.Duration) {
	lo, hi = ds[0], ds[0]
	var sum, sumSq float64
	for _, d := range ds {
		lo, hi = min(lo, d), max(hi, d)
		sum += float64(d)
		sumSq += float64(d) * float64(d)
	}
	n := float64(len(ds))
	mean := sum / n
	return lo, time.Duration(mean), hi, time.Duration(math.Sqrt(max(0, sumSq/n-mean*mean)))
}

// plural is "1 probe", "2 probes".
func plural[N ~int | ~uint32 | ~uint64](n N, noun string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
