package wire

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// MaxRequestElements caps the elements one request may decode into: each
// message, itself and every message nested in it, and each entry of a
// repeated field (a string, bytes, a number, packed or not). A request's
// bytes do not bound what decoding them holds: an element costs from 16
// bytes (an empty string in a list) to a few hundred (a message) however
// few it takes on the wire, two bytes at the least. A Sweep of 1 MB whose
// 10,000 targets each had 22 empty steps decoded into 45 MB, and a Fetch
// of 1 MB whose alpn held 540,000 empty strings into 25 MB before it was
// even validated. 65,536 is a Sweep of 10,000 targets with TLS options
// offering two protocols each (five elements a target), or of 8,000 with
// a dialogue of six steps; it decodes into 10 MB at the most
// (TestDecodedBytes measures each kind of element at the cap).
const MaxRequestElements = 1 << 16

// ErrTooManyElements refuses a request over MaxRequestElements, before it
// is decoded. The error is a *TooManyElementsError.
var ErrTooManyElements = errors.New("wire: the request decodes into too many elements")

// TooManyElementsError refuses a request over MaxRequestElements: Field
// is the field whose element passed the cap (or the message, when one of
// its unknown fields did). It is ErrTooManyElements.
type TooManyElementsError struct {
	Field protoreflect.FullName
}

func (e *TooManyElementsError) Error() string {
	return fmt.Sprintf("wire: the request decodes into more than %d elements, the cap passed at %s", MaxRequestElements, e.Field)
}

// Is makes the error ErrTooManyElements.
func (e *TooManyElementsError) Is(target error) bool { return target == ErrTooManyElements }

// countElements counts the elements (see MaxRequestElements) b, a message
// of type md, decodes into, itself included, following md's message
// fields down, and fails once they pass limit, naming the field that
// passed it. It reads the wire format only: nothing is allocated. It
// counts a message field that occurs twice twice, although decoding
// merges the two, and a field it does not know not at all: decoding
// keeps those as the bytes they came in.
func countElements(b []byte, md protoreflect.MessageDescriptor, limit int) (int, error) {
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
		fd := md.Fields().ByNumber(num)
		switch {
		case fd == nil:
		case fd.Message() != nil && typ == protowire.BytesType && n < limit:
			v, _ := protowire.ConsumeBytes(b[:fieldLen])
			sub, err := countElements(v, fd.Message(), limit-n)
			n += sub
			if err != nil {
				return n, err
			}
		case fd.Message() != nil && typ == protowire.BytesType:
			// The message alone passes the cap: name its field, not the
			// first of its own.
			n++
		case fd.IsList() && typ == protowire.BytesType && fd.Kind() != protoreflect.StringKind && fd.Kind() != protoreflect.BytesKind:
			v, _ := protowire.ConsumeBytes(b[:fieldLen])
			n += packedLen(v, fd.Kind())
		case fd.IsList():
			n++
		}
		if n > limit {
			at := md.FullName()
			if fd != nil {
				at = fd.FullName()
			}
			return n, &TooManyElementsError{Field: at}
		}
		b = b[fieldLen:]
	}
	return n, nil
}

// packedLen is the most numbers of kind k packed into v can decode into:
// one for each byte that ends a varint, or for each 4 or 8 bytes of a
// fixed-size number.
func packedLen(v []byte, k protoreflect.Kind) int {
	switch k {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return len(v) / 4
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return len(v) / 8
	}
	n := 0
	for _, c := range v {
		if c < 0x80 {
			n++
		}
	}
	return n
}
