package probecli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/netprobe/netprobe/client"
)

// writeJSON writes m as one line of protojson. protojson varies its
// whitespace on purpose; compacting it gives scripts the same bytes for the
// same message.
func writeJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.Marshal(m)
	if err != nil {
		return err
	}
	var line bytes.Buffer
	if err := json.Compact(&line, b); err != nil {
		return err
	}
	line.WriteByte('\n')
	_, err = w.Write(line.Bytes())
	return err
}

// ms formats a duration for people: microseconds below a millisecond,
// then three significant digits or so.
func ms(d time.Duration) string {
	if d < time.Millisecond {
		return d.Round(time.Microsecond).String()
	}
	return d.Round(10 * time.Microsecond).String()
}

// printConnect writes the connect phase, one line per event: the
// resolution of a host name, each attempt when there were several (or
// verbose), the connection, the TLS handshake and the reverse lookup.
// verbose adds the phases' times and the whole certificate chain.
func printConnect(w io.Writer, host string, r *client.ConnectResult, verbose bool) {
	// An IP address resolves to itself: no news.
	if _, err := netip.ParseAddr(host); err != nil && len(r.Resolved) > 0 {
		addrs := make([]string, len(r.Resolved))
		for i, a := range r.Resolved {
			addrs[i] = a.String()
		}
		fmt.Fprintf(w, "resolved %s to %s in %s\n", host, strings.Join(addrs, ", "), ms(r.ResolveDuration))
	}
	if len(r.Attempts) > 1 || verbose {
		for _, at := range r.Attempts {
			switch {
			case at.Err != nil:
				fmt.Fprintf(w, "tried %s at +%s: failed after %s: %v\n", at.Addr, ms(at.Start), ms(at.Duration), at.Err)
			case at.Abandoned:
				fmt.Fprintf(w, "tried %s at +%s: abandoned after %s\n", at.Addr, ms(at.Start), ms(at.Duration))
			default:
				fmt.Fprintf(w, "tried %s at +%s: connected after %s\n", at.Addr, ms(at.Start), ms(at.Duration))
			}
		}
	}
	if r.RemoteAddr.IsValid() {
		fmt.Fprintf(w, "connected to %s from %s in %s (total %s)%s\n", r.RemoteAddr, r.LocalAddr, ms(r.ConnectDuration), ms(r.TotalDuration), rtt(r.TCPInfo))
	}
	printTLS(w, r.TLS, verbose)
	if verbose && r.TCPInfo != nil {
		ti := r.TCPInfo
		fmt.Fprintf(w, "tcp: rtt %s (var %s, min %s), retransmits %d (%d in all), lost %d, mss %d/%d, path mtu %d, cwnd %d, delivery rate %d B/s\n",
			ms(ti.RTT), ms(ti.RTTVar), ms(ti.MinRTT), ti.Retransmits, ti.TotalRetransmits, ti.Lost, ti.SndMSS, ti.RcvMSS, ti.PathMTU, ti.SndCwnd, ti.DeliveryRate)
	}
	if verbose {
		phases := fmt.Sprintf("phases: resolve %s, connect %s", ms(r.ResolveDuration), ms(r.ConnectDuration))
		if r.TLS != nil {
			phases += ", tls " + ms(r.TLS.HandshakeDuration)
		}
		fmt.Fprintf(w, "%s, total %s\n", phases, ms(r.TotalDuration))
	}
	if rl := r.ReverseLookup; rl != nil {
		if rl.Err != nil {
			fmt.Fprintf(w, "reverse lookup of %s failed in %s: %v\n", r.RemoteAddr.Addr(), ms(rl.Duration), rl.Err)
		} else {
			fmt.Fprintf(w, "reverse lookup of %s: %s in %s\n", r.RemoteAddr.Addr(), strings.Join(rl.Names, ", "), ms(rl.Duration))
		}
	}
}

// printTLS writes a handshake: what was agreed, whether the chain
// verified, and its certificates (the leaf alone unless verbose).
func printTLS(w io.Writer, t *client.TLSResult, verbose bool) {
	if t == nil || t.Version == "" {
		return
	}
	alpn := ""
	if t.ALPN != "" {
		alpn = ", ALPN " + t.ALPN
	}
	verified := "verified"
	if t.ServerName != "" {
		verified += " for " + t.ServerName
	}
	if !t.Verified {
		verified = "NOT verified: " + t.VerifyError
	}
	fmt.Fprintf(w, "%s %s%s in %s; %s\n", t.Version, t.CipherSuite, alpn, ms(t.HandshakeDuration), verified)
	chain := t.Chain
	if !verbose {
		chain = chain[:min(1, len(chain))]
	}
	for i, c := range chain {
		what := "certificate"
		if verbose {
			what = fmt.Sprintf("certificate %d of %d:", i+1, len(t.Chain))
		}
		fmt.Fprintf(w, "%s %s%s, issued by %s, %s", what, c.Subject, forNames(c), c.Issuer, expiry(c.NotAfter, time.Now()))
		if !verbose {
			fmt.Fprintf(w, ", chain of %d", len(t.Chain))
		} else {
			fmt.Fprintf(w, ", serial %s, valid from %s", c.Serial, c.NotBefore.Format("2006-01-02"))
		}
		fmt.Fprintln(w)
	}
}

// expiry says when a certificate that is valid until notAfter expires, or
// expired, seen from now: "expires in 3 days (2025-01-04)", "expired 1 day
// ago (...)"; under a day in hours, under an hour in minutes, then with
// the time of day (UTC) beside the date.
func expiry(notAfter, now time.Time) string {
	left := notAfter.Sub(now)
	span, when := "less than a minute", notAfter.UTC().Format("2006-01-02 15:04 UTC")
	switch d := left.Abs(); {
	case d >= 24*time.Hour:
		span, when = plural(int(d/(24*time.Hour)), "day"), notAfter.UTC().Format("2006-01-02")
	case d >= time.Hour:
		span = plural(int(d/time.Hour), "hour")
	case d >= time.Minute:
		span = plural(int(d/time.Minute), "minute")
	}
	if left > 0 {
		return fmt.Sprintf("expires in %s (%s)", span, when)
	}
	return fmt.Sprintf("expired %s ago (%s)", span, when)
}

// forNames is " for NAMES" of a certificate's names, or nothing when it
// has none.
func forNames(c client.Certificate) string {
	names := append(slices.Clone(c.DNSNames), c.IPs...)
	if len(names) == 0 {
		return ""
	}
	return " for " + strings.Join(names, " ")
}

// rtt is ", rtt T" of the kernel's view of a connection, with its
// retransmits when there were any; nothing without one.
func rtt(ti *client.TCPInfo) string {
	if ti == nil {
		return ""
	}
	s := ", rtt " + ms(ti.RTT)
	if ti.TotalRetransmits > 0 {
		s += ", " + plural(ti.TotalRetransmits, "retransmit")
	}
	return s
}

// printSummary writes the end of a fetch.
func printSummary(w io.Writer, s *client.FetchSummary) {
	fmt.Fprintf(w, "sent %s, received %d", plural(s.BytesSent, "byte"), s.BytesReceived)
	if s.TimeToFirstByte > 0 {
		fmt.Fprintf(w, " (first byte at %s)", ms(s.TimeToFirstByte))
	}
	fmt.Fprintf(w, "; %s after %s%s\n", endText[s.EndReason], ms(s.TotalDuration), rtt(s.TCPInfo))
}

var endText = map[client.EndReason]string{
	client.EndMatched:  "the last --expect matched",
	client.EndEOF:      "the target closed",
	client.EndMaxBytes: "stopped at --max-bytes",
	client.EndIdle:     "the target fell silent",
	client.EndError:    "failed",
}
