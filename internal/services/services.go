// Package services maps service names to ports and back, like getservbyname
// and getservbyport: from the host's services database (services(5)) first,
// then from a table built into the binary.
package services

import (
	"bufio"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// Source is the database an entry came from.
type Source int

const (
	// System is the host's services database.
	System Source = iota + 1
	// Builtin is the table compiled into netprobe.
	Builtin
)

// Entry is one service on one protocol.
type Entry struct {
	Name     string
	Port     uint16
	Protocol string
	Aliases  []string
	Source   Source
}

type nameKey struct{ name, protocol string }
type portKey struct {
	port     uint16
	protocol string
}

// db is one parsed services file.
type db struct {
	byName map[nameKey]*Entry
	byPort map[portKey]*Entry
}

// parse reads services(5) lines: "name port/protocol [alias ...] [# comment]".
// Malformed lines are skipped, as the C library does.
func parse(r io.Reader, src Source) (*db, error) {
	d := &db{byName: map[nameKey]*Entry{}, byPort: map[portKey]*Entry{}}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		portStr, proto, ok := strings.Cut(f[1], "/")
		if !ok {
			continue
		}
		port, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || port == 0 {
			continue
		}
		e := &Entry{Name: f[0], Port: uint16(port), Protocol: strings.ToLower(proto), Aliases: f[2:], Source: src}
		// The first entry wins, for names and for ports alike, as in the C
		// library's linear scan.
		for _, n := range append([]string{e.Name}, e.Aliases...) {
			k := nameKey{strings.ToLower(n), e.Protocol}
			if _, dup := d.byName[k]; !dup {
				d.byName[k] = e
			}
		}
		pk := portKey{e.Port, e.Protocol}
		if _, dup := d.byPort[pk]; !dup {
			d.byPort[pk] = e
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return d, nil
}

//go:embed builtin.txt
var builtinText string

// Table answers service lookups from the system database, falling back to
// the built-in one.
type Table struct {
	system  *db // nil when the host has no services database
	builtin *db
}

// Load reads the services database at path (usually /etc/services). A
// missing file is not an error: lookups then use the built-in table alone.
func Load(path string) (*Table, error) {
	builtin, err := parse(strings.NewReader(builtinText), Builtin)
	if err != nil {
		return nil, fmt.Errorf("parse built-in services table: %w", err)
	}
	t := &Table{builtin: builtin}
	if path == "" {
		return t, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open services database: %w", err)
	}
	defer f.Close()
	if t.system, err = parse(f, System); err != nil {
		return nil, fmt.Errorf("read services database %s: %w", path, err)
	}
	return t, nil
}

// ByName looks up a service name or alias, case-insensitively, on a protocol
// such as "tcp".
func (t *Table) ByName(name, protocol string) (*Entry, bool) {
	k := nameKey{strings.ToLower(name), strings.ToLower(protocol)}
	for _, d := range t.dbs() {
		if e, ok := d.byName[k]; ok {
			return e, true
		}
	}
	return nil, false
}

// ByPort looks up the service on a port and protocol.
func (t *Table) ByPort(port uint16, protocol string) (*Entry, bool) {
	k := portKey{port, strings.ToLower(protocol)}
	for _, d := range t.dbs() {
		if e, ok := d.byPort[k]; ok {
			return e, true
		}
	}
	return nil, false
}

func (t *Table) dbs() []*db {
	if t.system == nil {
		return []*db{t.builtin}
	}
	return []*db{t.system, t.builtin}
}
