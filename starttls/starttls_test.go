package starttls_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"

	netprobev1 "github.com/netprobe/netprobe/gen/netprobe/v1"
	"github.com/netprobe/netprobe/internal/probetest"
	"github.com/netprobe/netprobe/starttls"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// servers play each protocol's side up to the handshake: what to say
// first, and what to answer to what the client sends.
var servers = map[string]func(c net.Conn, r *bufio.Reader) bool{
	"smtp": func(c net.Conn, r *bufio.Reader) bool {
		io.WriteString(c, "220 mail.test ESMTP\r\n")
		return line(r, "EHLO ") && say(c, "250-mail.test\r\n250 STARTTLS\r\n") && line(r, "STARTTLS") && say(c, "220 go ahead\r\n")
	},
	"imap": func(c net.Conn, r *bufio.Reader) bool {
		io.WriteString(c, "* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
		return line(r, "a001 STARTTLS") && say(c, "a001 OK begin TLS\r\n")
	},
	"pop3": func(c net.Conn, r *bufio.Reader) bool {
		io.WriteString(c, "+OK POP3 ready\r\n")
		return line(r, "STLS") && say(c, "+OK begin TLS\r\n")
	},
	"ftp": func(c net.Conn, r *bufio.Reader) bool {
		io.WriteString(c, "220 FTP ready\r\n")
		return line(r, "AUTH TLS") && say(c, "234 AUTH TLS OK\r\n")
	},
	"postgres": func(c net.Conn, r *bufio.Reader) bool {
		return read(r, "\x00\x00\x00\x08\x04\xd2\x16\x2f") && say(c, "S")
	},
	"ldap": func(c net.Conn, r *bufio.Reader) bool {
		// An ExtendedResponse: success, no DN, no message.
		return read(r, "\x30\x1d\x02\x01\x01\x77\x18\x80\x161.3.6.1.4.1.1466.20037") && say(c, "\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x00\x04\x00\x04\x00")
	},
}

func line(r *bufio.Reader, prefix string) bool {
	l, err := r.ReadString('\n')
	return err == nil && strings.HasPrefix(l, prefix)
}

func read(r *bufio.Reader, want string) bool {
	got := make([]byte, len(want))
	_, err := io.ReadFull(r, got)
	return err == nil && string(got) == want
}

func say(c net.Conn, s string) bool {
	_, err := io.WriteString(c, s)
	return err == nil
}

// TestDialogues runs each protocol's dialogue against a server of it made
// here: the handshake is verified, and the exchange goes on over TLS.
func TestDialogues(t *testing.T) {
	e := probetest.Start(t)
	ca := probetest.NewCA(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "localhost", true)}}
	if len(starttls.Names()) != len(servers) {
		t.Fatalf("dialogues %v, a server for each of %d wanted", starttls.Names(), len(servers))
	}
	for _, name := range starttls.Names() {
		t.Run(name, func(t *testing.T) {
			d, _ := starttls.Lookup(name)
			tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
				c.SetDeadline(time.Now().Add(probetest.Timeout))
				r := bufio.NewReader(c)
				if !servers[name](c, r) || r.Buffered() > 0 {
					c.Close()
					return
				}
				tc := tls.Server(c, cfg)
				io.WriteString(tc, "secret\n")
				probetest.ReadAll(tc)
				tc.Close()
			})
			f := fetch(t, e, &netprobev1.FetchRequest{
				Target: &netprobev1.Target{Host: "127.0.0.1", Port: tg.Port()},
				Steps:  d.Steps,
				Tls:    &netprobev1.TlsOptions{ServerName: "localhost", CaBundle: ca.PEM},
			})
			s := f.summary
			if s.GetError() != nil || !s.GetTls().GetVerified() || s.GetEndReason() != netprobev1.EndReason_END_REASON_EOF || !bytes.HasSuffix(f.data, []byte("secret\n")) {
				t.Errorf("summary %v, data %q; want a verified handshake and the secret", s, f.data)
			}
			// A Watch of the same events sees no refusal.
			w := d.Watch()
			for _, msg := range f.events {
				if m := msg.GetMatch(); m != nil {
					w.Matched(int(m.GetStep()))
				} else if _, reply, refused := w.Received(msg.GetData().GetData()); refused {
					t.Errorf("a Watch saw a refusal: %q", reply)
				}
			}
		})
	}
}

// TestRefused runs the SMTP dialogue against a server without TLS: the
// expect after STARTTLS does not match.
func TestRefused(t *testing.T) {
	e := probetest.Start(t)
	tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
		r := bufio.NewReader(c)
		io.WriteString(c, "220 mail.test ESMTP\r\n")
		if line(r, "EHLO") && say(c, "250 mail.test\r\n") && line(r, "STARTTLS") {
			io.WriteString(c, "454 TLS not available\r\n")
		}
		c.Close()
	})
	d, _ := starttls.Lookup("smtp")
	f := fetch(t, e, &netprobev1.FetchRequest{Target: &netprobev1.Target{Host: "127.0.0.1", Port: tg.Port()}, Steps: d.Steps})
	if pe := f.summary.GetError(); pe.GetStage() != netprobev1.Stage_STAGE_EXPECT || pe.GetReason() != netprobev1.Reason_REASON_NO_MATCH || pe.GetStep() != 4 {
		t.Errorf("error %v, want EXPECT / NO_MATCH at step 4", pe)
	}
	if _, ok := starttls.Lookup("gopher"); ok {
		t.Error("a dialogue for gopher")
	}
}

// refusers play servers that refuse, at each step where a protocol can,
// and then keep the connection open until the client leaves: the
// service's expect would wait for its go-ahead until the timeout. step is
// the expect step that refusal answers, reply the refusal.
var refusers = []struct {
	name, protocol string
	serve          func(c net.Conn, r *bufio.Reader) bool
	step           int
	reply          string
}{
	{"SMTP greeting", "smtp", func(c net.Conn, r *bufio.Reader) bool {
		return say(c, "554 5.3.2 No SMTP service here\r\n")
	}, 0, "554 5.3.2 No SMTP service here\r\n"},
	{"SMTP EHLO", "smtp", func(c net.Conn, r *bufio.Reader) bool {
		return say(c, "220 mail.test ESMTP\r\n") && line(r, "EHLO ") && say(c, "502 5.5.2 Error: command not recognized\r\n")
	}, 2, "502 5.5.2 Error: command not recognized\r\n"},
	{"SMTP STARTTLS", "smtp", func(c net.Conn, r *bufio.Reader) bool {
		return say(c, "220 mail.test ESMTP\r\n") && line(r, "EHLO ") && say(c, "250-mail.test\r\n250 8BITMIME\r\n") &&
			line(r, "STARTTLS") && say(c, "454 4.7.0 TLS not available due to local problem\r\n")
	}, 4, "454 4.7.0 TLS not available due to local problem\r\n"},
	{"SMTP STARTTLS, a reply of two lines in two writes", "smtp", func(c net.Conn, r *bufio.Reader) bool {
		return say(c, "220 mail.test ESMTP\r\n") && line(r, "EHLO ") && say(c, "250 mail.test\r\n") &&
			line(r, "STARTTLS") && say(c, "502-5.5.1 Unrecognized command.\r\n502 5.5.1") && say(c, " Try HELP.\r\n")
	}, 4, "502 5.5.1 Try HELP.\r\n"},
	{"IMAP greeting", "imap", func(c net.Conn, r *bufio.Reader) bool {
		return say(c, "* BYE Too many connections\r\n")
	}, 0, "* BYE Too many connections\r\n"},
	{"IMAP STARTTLS NO", "imap", func(c net.Conn, r *bufio.Reader) bool {
		return say(c, "* OK [CAPABILITY IMAP4rev1] ready\r\n") && line(r, "a001 STARTTLS") && say(c, "a001 NO STARTTLS not available\r\n")
	}, 2, "a001 NO STARTTLS not available\r\n"},
	{"IMAP STARTTLS BAD", "imap", func(c net.Conn, r *bufio.Reader) bool {
		return say(c, "* OK ready\r\n") && line(r, "a001 STARTTLS") && say(c, "* OK still here\r\na001 BAD Unknown command\r\n")
	}, 2, "a001 BAD Unknown command\r\n"},
	{"POP3 greeting", "pop3", func(c net.Conn, r *bufio.Reader) bool {
		return say(c, "-ERR too busy\r\n")
	}, 0, "-ERR too busy\r\n"},
	{"POP3 STLS", "pop3", func(c net.Conn, r *bufio.Reader) bool {
		return say(c, "+OK POP3 ready\r\n") && line(r, "STLS") && say(c, "-ERR command not supported\r\n")
	}, 2, "-ERR command not supported\r\n"},
	{"FTP greeting", "ftp", func(c net.Conn, r *bufio.Reader) bool {
		return say(c, "421 Service not available, closing control connection.\r\n")
	}, 0, "421 Service not available, closing control connection.\r\n"},
	{"FTP AUTH TLS", "ftp", func(c net.Conn, r *bufio.Reader) bool {
		return say(c, "220-Welcome\r\n220 FTP ready\r\n") && line(r, "AUTH TLS") && say(c, "530 Please login with USER and PASS.\r\n")
	}, 2, "530 Please login with USER and PASS.\r\n"},
	{"PostgreSQL without TLS", "postgres", func(c net.Conn, r *bufio.Reader) bool {
		return read(r, "\x00\x00\x00\x08\x04\xd2\x16\x2f") && say(c, "N")
	}, 1, "N"},
	{"LDAP protocolError", "ldap", func(c net.Conn, r *bufio.Reader) bool {
		return read(r, "\x30\x1d\x02\x01\x01\x77\x18\x80\x161.3.6.1.4.1.1466.20037") && say(c, "\x30\x0c\x02\x01\x01\x78\x07\x0a\x01\x02\x04\x00\x04\x00")
	}, 1, "\x78\x07\x0a\x01\x02"},
	{"LDAP unavailable", "ldap", func(c net.Conn, r *bufio.Reader) bool {
		return read(r, "\x30\x1d\x02\x01\x01\x77\x18\x80\x161.3.6.1.4.1.1466.20037") && say(c, "\x30\x12\x02\x01\x01\x78\x0d\x0a\x01\x34\x04\x00\x04\x06no TLS")
	}, 1, "\x78\x0d\x0a\x01\x34"},
}

// TestWatchRefusals runs each protocol's dialogue through the service
// against a server that refuses, step by step, and keeps the connection
// open: a Watch fed the Fetch's data and matches as they arrive tells the
// refusal, its step and the reply, long before the 30 s timeout.
func TestWatchRefusals(t *testing.T) {
	e := probetest.Start(t)
	protocols := map[string]bool{}
	for _, tc := range refusers {
		protocols[tc.protocol] = true
		t.Run(tc.name, func(t *testing.T) {
			d, _ := starttls.Lookup(tc.protocol)
			tg := probetest.Listen(t, "127.0.0.1:0", func(c net.Conn) {
				c.SetDeadline(time.Now().Add(probetest.Timeout))
				r := bufio.NewReader(c)
				if tc.serve(c, r) {
					probetest.ReadAll(c)
				}
				c.Close()
			})
			ctx, cancel := context.WithCancel(probetest.Context(t))
			defer cancel()
			stream, err := e.Probe.Fetch(ctx, &netprobev1.FetchRequest{
				Target:  &netprobev1.Target{Host: "127.0.0.1", Port: tg.Port()},
				Steps:   d.Steps,
				Timeout: durationpb.New(30 * time.Second),
			})
			if err != nil {
				t.Fatal(err)
			}
			w := d.Watch()
			for {
				msg, err := stream.Recv()
				if err != nil {
					t.Fatalf("the stream ended without a refusal seen: %v", err)
				}
				switch ev := msg.GetEvent().(type) {
				case *netprobev1.FetchResponse_Match:
					w.Matched(int(ev.Match.GetStep()))
				case *netprobev1.FetchResponse_Summary:
					t.Fatalf("the fetch ended without a refusal seen: %v", ev.Summary)
				case *netprobev1.FetchResponse_Data:
					if step, reply, refused := w.Received(ev.Data.GetData()); refused {
						if step != tc.step || string(reply) != tc.reply {
							t.Errorf("refused at step %d with %q, want step %d and %q", step, reply, tc.step, tc.reply)
						}
						return
					}
				}
			}
		})
	}
	for _, name := range starttls.Names() {
		if d, _ := starttls.Lookup(name); !protocols[name] || len(d.Refusals) == 0 {
			t.Errorf("%s: no refusal of it is played here, or it knows none", name)
		}
	}
}

// TestWatchOrder gives a Watch a go-ahead and a refusal in one piece: the
// first of them is what the server said.
func TestWatchOrder(t *testing.T) {
	d, _ := starttls.Lookup("smtp")
	for _, tc := range []struct {
		text    string
		refused bool
	}{
		{"220 mail.test ESMTP\r\n554 changed my mind\r\n", false},
		{"554 no\r\n220 yes\r\n", true},
		{"554 no", false}, // not a whole line yet
	} {
		if _, _, refused := d.Watch().Received([]byte(tc.text)); refused != tc.refused {
			t.Errorf("%q: refused %v, want %v", tc.text, refused, tc.refused)
		}
	}
}

// TestWatchWindow plays servers whose greeting runs on past what a Watch
// keeps (16 KiB of text, 256 bytes of a binary protocol), a byte at a
// time: the Watch stops, holding no more, and leaves the refusal after it
// to the expect's own limits; within the window it tells it.
func TestWatchWindow(t *testing.T) {
	for _, tc := range []struct {
		name, protocol string
		junk, refusal  string
		refused        bool
	}{
		{"100 lines", "smtp", strings.Repeat("220-a line of a long banner\r\n", 100), "554 go away\r\n", true},
		{"2,000 lines", "smtp", strings.Repeat("220-a line of a long banner\r\n", 2000), "554 go away\r\n", false},
		{"one line of 16,000 bytes", "smtp", "220-" + strings.Repeat("x", 16000-6) + "\r\n", "554 go away\r\n", true},
		{"one line of 17,000 bytes", "smtp", "220-" + strings.Repeat("x", 17000-6) + "\r\n", "554 go away\r\n", false},
		{"LDAP, 200 bytes first", "ldap", strings.Repeat("\x00", 200), "\x78\x07\x0a\x01\x02", true},
		{"LDAP, 300 bytes first", "ldap", strings.Repeat("\x00", 300), "\x78\x07\x0a\x01\x02", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := starttls.Lookup(tc.protocol)
			w := d.Watch()
			for i := range len(tc.junk) {
				if _, _, refused := w.Received([]byte(tc.junk[i : i+1])); refused {
					t.Fatalf("refused at byte %d of the junk", i)
				}
			}
			if _, _, refused := w.Received([]byte(tc.refusal)); refused != tc.refused {
				t.Errorf("%d bytes, then a refusal: refused %v, want %v", len(tc.junk), refused, tc.refused)
			}
		})
	}
}

// TestWatchWindowPerExpect fills most of the window before one expect
// matches and most of it again before the next: each expect has a window
// of its own, as what the service matches it against starts after the
// previous match.
func TestWatchWindowPerExpect(t *testing.T) {
	d, _ := starttls.Lookup("smtp")
	w := d.Watch()
	for _, piece := range []string{strings.Repeat("220-welcome\r\n", 1000), "220 mail.test ESMTP\r\n"} {
		if _, _, refused := w.Received([]byte(piece)); refused {
			t.Fatalf("refused at %q", piece[:20])
		}
	}
	w.Matched(0)
	for _, piece := range []string{strings.Repeat("250-EXTENSION\r\n", 800), "502 5.5.2 Error: command not recognized\r\n"} {
		if step, reply, refused := w.Received([]byte(piece)); refused != (piece[0] == '5') || refused && (step != 2 || string(reply) != piece) {
			t.Errorf("%q...: refused %v at step %d with %q", piece[:20], refused, step, reply)
		}
	}
}

// BenchmarkWatchDribble feeds a Watch a banner of 16,000 bytes a byte at a
// time, as a target that dribbles sends it, then a refusal: the cost of
// each byte received.
func BenchmarkWatchDribble(b *testing.B) {
	d, _ := starttls.Lookup("smtp")
	banner := []byte(strings.Repeat("220-"+strings.Repeat("x", 96)+"\r\n", 157))
	b.SetBytes(int64(len(banner)))
	for b.Loop() {
		w := d.Watch()
		for i := range banner {
			w.Received(banner[i : i+1])
		}
		if _, _, refused := w.Received([]byte("554 go away\r\n")); !refused {
			b.Fatal("no refusal")
		}
	}
}

type fetched struct {
	data    []byte
	summary *netprobev1.FetchSummary
	// events are the data and matches, in order.
	events []*netprobev1.FetchResponse
}

func fetch(t *testing.T, e *probetest.Server, req *netprobev1.FetchRequest) fetched {
	t.Helper()
	stream, err := e.Probe.Fetch(probetest.Context(t), req)
	if err != nil {
		t.Fatal(err)
	}
	var f fetched
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return f
		}
		if err != nil {
			t.Fatal(err)
		}
		f.data = append(f.data, msg.GetData().GetData()...)
		if msg.GetData() != nil || msg.GetMatch() != nil {
			f.events = append(f.events, msg)
		}
		if s := msg.GetSummary(); s != nil {
			f.summary = s
		}
	}
}
