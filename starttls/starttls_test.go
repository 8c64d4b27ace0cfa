package starttls_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
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
		})
	}
}

// refusers play servers that refuse, at each step where a protocol can,
// and then keep the connection open until the client leaves: an expect
// without its refusal would wait for its go-ahead until the timeout. step
// is the expect step that refusal answers, reply what the refusal quotes.
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

// TestRefusals runs each protocol's dialogue through the service against
// a server that refuses, step by step, and keeps the connection open: the
// step fails at once, EXPECT / NO_MATCH, quoting the refusal, where
// without its refusal it would wait for the 60 s timeout (longer than the
// test may take). Every expect of every dialogue has a refusal, and each
// protocol a server here that plays it.
func TestRefusals(t *testing.T) {
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
			f := fetch(t, e, &netprobev1.FetchRequest{
				Target:  &netprobev1.Target{Host: "127.0.0.1", Port: tg.Port()},
				Steps:   d.Steps,
				Timeout: durationpb.New(time.Minute),
			})
			pe := f.summary.GetError()
			want := fmt.Sprintf("no match for %q: the target refused with %q", d.Steps[tc.step].GetExpect(), tc.reply)
			if pe.GetStage() != netprobev1.Stage_STAGE_EXPECT || pe.GetReason() != netprobev1.Reason_REASON_NO_MATCH || pe.GetStep() != uint32(tc.step) || pe.GetMessage() != want {
				t.Errorf("error %v; want EXPECT / NO_MATCH at step %d, %q", pe, tc.step, want)
			}
		})
	}
	for _, name := range starttls.Names() {
		if !protocols[name] {
			t.Errorf("%s: no refusal of it is played here", name)
		}
		d, _ := starttls.Lookup(name)
		for i, st := range d.Steps {
			if st.GetExpect() != "" && st.GetRefusal() == "" {
				t.Errorf("%s: step %d expects %q and has no refusal", name, i, st.GetExpect())
			}
		}
	}
	if _, ok := starttls.Lookup("gopher"); ok {
		t.Error("a dialogue for gopher")
	}
}

type fetched struct {
	data    []byte
	summary *netprobev1.FetchSummary
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
		if s := msg.GetSummary(); s != nil {
			f.summary = s
		}
	}
}
