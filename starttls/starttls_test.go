package starttls_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

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
