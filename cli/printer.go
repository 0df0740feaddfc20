package cli

import (
	"fmt"
	"io"
	"strconv"

	"github.com/l2tpu/l2tpu/dataplane"
)

// kind is where a field is printed, as json_print.c's enum output_type.
type kind uint8

const (
	printJSON kind = 1 << iota // PRINT_JSON: in the JSON object only
	printFP                    // PRINT_FP: in the text only
	printAny  = printJSON | printFP
)

// printer is iproute2's lib/json_print.c for one show: each call names a
// field once, with its JSON key and its text format, and writes whichever
// the output is (-j: JSON through jsonw, else text). Text formats are Go's:
// %d where ip has %u or %hu.
type printer struct {
	w    io.Writer
	j    *jsonw // -j; nil for text
	text []byte
	sl   string // ip's _SL_, what print_nl writes: "\n", or "\" with -o
}

// newPrinter is new_json_obj: with -j the dump is one JSON array.
func newPrinter(w io.Writer, f Format) *printer {
	p := &printer{w: w, sl: "\n"}
	if f.Oneline {
		p.sl = `\`
	}
	if f.JSON {
		p.j = &jsonw{w: w, pretty: f.Pretty}
		p.j.startArray()
	}
	return p
}

// done is delete_json_obj (the array closed, a newline) and writes the
// output.
func (p *printer) done() error {
	if p.j != nil {
		p.j.endArray()
		return p.j.flush()
	}
	_, err := p.w.Write(p.text)
	p.text = p.text[:0]
	return err
}

func (p *printer) json(k kind) bool { return p.j != nil && k&printJSON != 0 }
func (p *printer) fp(k kind) bool   { return p.j == nil && k&printFP != 0 }

// uint is print_uint (and print_hu).
func (p *printer) uint(k kind, key, format string, v uint64) {
	switch {
	case p.json(k):
		p.j.kvUint(key, v)
	case p.fp(k):
		p.text = fmt.Appendf(p.text, format, v)
	}
}

// str is print_string with a key and a value.
func (p *printer) str(k kind, key, format, v string) {
	switch {
	case p.json(k):
		p.j.kvStr(key, v)
	case p.fp(k):
		p.text = fmt.Appendf(p.text, format, v)
	}
}

// bool is print_bool: true or false in JSON, "true" or "false" in text.
func (p *printer) bool(k kind, key, format string, v bool) {
	switch {
	case p.json(k):
		p.j.kvBool(key, v)
	case p.fp(k):
		p.text = fmt.Appendf(p.text, format, strconv.FormatBool(v))
	}
}

// null is print_null: the key with null in JSON, text as it is.
func (p *printer) null(k kind, key, text string) {
	switch {
	case p.json(k):
		p.j.kvNull(key)
	case p.fp(k):
		p.text = append(p.text, text...)
	}
}

// literal is print_string(PRINT_FP, NULL, text, NULL): text only, as it
// is.
func (p *printer) literal(text string) {
	if p.fp(printFP) {
		p.text = append(p.text, text...)
	}
}

// nl is print_nl: a line break in text only, "\" with -o.
func (p *printer) nl() { p.literal(p.sl) }

// open is open_json_object: in JSON only, named key unless "".
func (p *printer) open(key string) {
	if p.j == nil {
		return
	}
	if key != "" {
		p.j.name(key)
	}
	p.j.startObject()
}

// close is close_json_object.
func (p *printer) close() {
	if p.j != nil {
		p.j.endObject()
	}
}

// stats prints the ten counters (-s, l2tpu's extension) in
// dataplane.Counters' order: a "stats" object in JSON; in text a line of
// the tx_ counters and one of the rx_, each ended by a line break (a
// tunnel's, whose last line ended already) or begun by one (a session's,
// whose last line is open).
func (p *printer) stats(s *dataplane.Stats, nlFirst bool) {
	p.open("stats")
	for i, c := range dataplane.Counters {
		lead := " "
		if i == 0 || c.Name[:3] != dataplane.Counters[i-1].Name[:3] {
			if nlFirst || i > 0 {
				p.nl()
			}
			lead = "  "
		}
		p.uint(printAny, c.Name, lead+c.Name+" %d", c.Get(s))
	}
	if !nlFirst {
		p.nl()
	}
	p.close()
}
