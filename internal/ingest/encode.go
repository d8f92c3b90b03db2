package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/minuted/minuted/internal/call"
)

// msgChunk is the size of the chunks CALLS message bodies are copied into.
const msgChunk = 16 << 10

// maxSubjects bounds the subjects a callEncoder remembers (one per project
// and kind); past it, it starts again.
const maxSubjects = 4096

// callEncoder turns the tracker's call events into CALLS messages with
// little garbage, ingest's main CPU cost being the runtime's: bodies are
// encoded into one reused buffer and copied into shared chunks (the
// Publisher keeps each until JetStream acknowledges it; a chunk is freed
// when all of its messages are), and subjects, few and repeated, are built
// once. Not for concurrent use.
type callEncoder struct {
	json     reusedJSON
	chunk    []byte
	subjects map[subjectKey]string
}

// reusedJSON encodes values as json.Marshal does into one reused buffer.
// Not for concurrent use.
type reusedJSON struct {
	buf bytes.Buffer
	enc *json.Encoder
}

// marshal returns json.Marshal's bytes of v, valid until the next call.
func (r *reusedJSON) marshal(v any) ([]byte, error) {
	if r.enc == nil {
		r.enc = json.NewEncoder(&r.buf) // escapes HTML as json.Marshal does
	}
	r.buf.Reset()
	if err := r.enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(r.buf.Bytes(), []byte("\n")), nil // Encode's newline, not v's
}

type subjectKey struct {
	project string
	kind    call.Kind
}

// encode returns e's subject, Nats-Msg-Id and body (json.Marshal's bytes).
func (c *callEncoder) encode(e *call.Event) (subject, id string, data []byte, err error) {
	if c.subjects == nil {
		c.subjects = make(map[subjectKey]string)
	}
	body, err := c.json.marshal(e)
	if err != nil {
		return "", "", nil, fmt.Errorf("encode %s event of %s: %w", e.Kind, e.Channel, err)
	}
	return c.subject(e), msgID(e), c.keep(body), nil
}

// subject is e.Subject(), built once per project and kind.
func (c *callEncoder) subject(e *call.Event) string {
	k := subjectKey{e.Project, e.Kind}
	if s, ok := c.subjects[k]; ok {
		return s
	}
	if len(c.subjects) >= maxSubjects {
		clear(c.subjects)
	}
	k.project = strings.Clone(k.project) // may share a frame's memory
	s := e.Subject()
	c.subjects[k] = s
	return s
}

// keep copies b into the current chunk (a new one when it is full).
func (c *callEncoder) keep(b []byte) []byte {
	if cap(c.chunk)-len(c.chunk) < len(b) {
		c.chunk = make([]byte, 0, max(msgChunk, len(b)))
	}
	start := len(c.chunk)
	c.chunk = append(c.chunk, b...)
	return c.chunk[start:len(c.chunk):len(c.chunk)]
}
