package cli

import (
	"io"
	"strconv"
)

// jsonw reproduces iproute2's lib/json_writer.c output byte for byte:
// compact `"key":value`, or pretty with 4-space indents, "[ {" and "} ]".
type jsonw struct {
	w      io.Writer
	pretty bool
	depth  int
	sep    byte
	buf    []byte
}

func (j *jsonw) put(s string) { j.buf = append(j.buf, s...) }
func (j *jsonw) putc(c byte)  { j.buf = append(j.buf, c) }

func (j *jsonw) eol() {
	if !j.pretty {
		return
	}
	j.putc('\n')
	for i := 0; i < j.depth; i++ {
		j.put("    ")
	}
}

func (j *jsonw) eor() {
	if j.sep != 0 {
		j.putc(j.sep)
	}
	j.sep = ','
}

func (j *jsonw) begin(c byte) {
	j.eor()
	j.putc(c)
	j.depth++
	j.sep = 0
}

func (j *jsonw) end(c byte) {
	j.depth--
	if j.sep != 0 {
		j.eol()
	}
	j.putc(c)
	j.sep = ','
}

func (j *jsonw) startArray() {
	j.begin('[')
	if j.pretty {
		j.putc(' ')
	}
}

func (j *jsonw) endArray() {
	if j.pretty && j.sep != 0 {
		j.putc(' ')
	}
	j.sep = 0
	j.end(']')
}

func (j *jsonw) startObject() { j.begin('{') }
func (j *jsonw) endObject()   { j.end('}') }

func (j *jsonw) name(n string) {
	j.eor()
	j.eol()
	j.sep = 0
	j.str(n)
	j.putc(':')
	if j.pretty {
		j.putc(' ')
	}
}

// str is jsonw_puts: only these characters are escaped.
func (j *jsonw) str(s string) {
	j.putc('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\t':
			j.put(`\t`)
		case '\n':
			j.put(`\n`)
		case '\r':
			j.put(`\r`)
		case '\f':
			j.put(`\f`)
		case '\b':
			j.put(`\b`)
		case '\\':
			j.put(`\\`)
		case '"':
			j.put(`\"`)
		default:
			j.putc(c)
		}
	}
	j.putc('"')
}

func (j *jsonw) value(raw string) { j.eor(); j.put(raw) }

func (j *jsonw) kvStr(k, v string) { j.name(k); j.eor(); j.str(v) }
func (j *jsonw) kvUint(k string, v uint64) {
	j.name(k)
	j.value(strconv.FormatUint(v, 10))
}
func (j *jsonw) kvBool(k string, v bool) { j.name(k); j.value(strconv.FormatBool(v)) }
func (j *jsonw) kvNull(k string)         { j.name(k); j.value("null") }

// flush ends the document with a newline (jsonw_destroy) and writes it.
func (j *jsonw) flush() error {
	j.putc('\n')
	_, err := j.w.Write(j.buf)
	j.buf = j.buf[:0]
	return err
}
