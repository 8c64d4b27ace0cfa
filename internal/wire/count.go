package wire

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// MaxRequestMessages caps the messages one request may decode into, itself
// and every message nested in it. A request's bytes do not bound what
// decoding them holds: a Sweep of 1 MB whose 10,000 targets each had 22
// empty steps decoded into 45 MB (a message is some 100 to 200 bytes,
// however few it takes on the wire). 32,768 is a Sweep of 10,000 targets,
// or of 8,000 with a dialogue of two steps each: some 3 MB decoded.
const MaxRequestMessages = 1 << 15

// ErrTooManyMessages refuses a request over MaxRequestMessages, before it
// is decoded.
var ErrTooManyMessages = errors.New("wire: the request decodes into too many messages")

// countMessages counts the messages b, a message of type md, decodes into,
// itself included, following md's message fields down, and fails once
// they pass limit. It reads the wire format only: nothing is allocated.
func countMessages(b []byte, md protoreflect.MessageDescriptor, limit int) (int, error) {
	n := 1
	for len(b) > 0 {
		num, typ, tagLen := protowire.ConsumeTag(b)
		if tagLen < 0 {
			return n, protowire.ParseError(tagLen)
		}
		b = b[tagLen:]
		fieldLen := protowire.ConsumeFieldValue(num, typ, b)
		if fieldLen < 0 {
			return n, protowire.ParseError(fieldLen)
		}
		if fd := md.Fields().ByNumber(num); fd != nil && typ == protowire.BytesType && fd.Message() != nil {
			v, _ := protowire.ConsumeBytes(b[:fieldLen])
			sub, err := countMessages(v, fd.Message(), limit-n)
			n += sub
			if err != nil {
				return n, err
			}
		}
		if n > limit {
			return n, fmt.Errorf("%w: more than %d", ErrTooManyMessages, MaxRequestMessages)
		}
		b = b[fieldLen:]
	}
	return n, nil
}
