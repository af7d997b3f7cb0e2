<%@ page contentType="application/json; charset=UTF-8" pageEncoding="UTF-8" session="false"
    trimDirectiveWhitespaces="true" import="java.util.*,java.io.*,java.nio.charset.StandardCharsets" %><%!
    // What Tomcat understood of the request, as JSON: the area its servlet
    // mapping picked, its decoded path, and every header as getHeaders()
    // returns it (names lower-cased, '_' and '.' read as '-').
    static final Object LOCK = new Object();

    static String q(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder("\"");
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20 || c > 0x7e) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }
%><%
    String area = config.getInitParameter("area");
    TreeMap<String, List<String>> headers = new TreeMap<String, List<String>>();
    for (Enumeration<String> names = request.getHeaderNames(); names.hasMoreElements();) {
        String name = names.nextElement();
        String norm = name.toLowerCase(Locale.ROOT).replace('_', '-').replace('.', '-');
        List<String> values = headers.get(norm);
        if (values == null) { values = new ArrayList<String>(); headers.put(norm, values); }
        for (Enumeration<String> v = request.getHeaders(name); v.hasMoreElements();) values.add(v.nextElement());
    }
    StringBuilder h = new StringBuilder("{");
    for (Map.Entry<String, List<String>> e : headers.entrySet()) {
        if (h.length() > 1) h.append(',');
        h.append(q(e.getKey())).append(":[");
        for (int i = 0; i < e.getValue().size(); i++) { if (i > 0) h.append(','); h.append(q(e.getValue().get(i))); }
        h.append(']');
    }
    h.append('}');
    String path = request.getServletPath() + (request.getPathInfo() == null ? "" : request.getPathInfo());
    String json = "{\"server\":\"tomcat\",\"case\":" + q(request.getHeader("x-diff-case"))
        + ",\"area\":" + q(area) + ",\"path\":" + q(path)
        + ",\"uri\":" + q(request.getRequestURI())
        + ",\"servletPath\":" + q(request.getServletPath())
        + ",\"pathInfo\":" + q(request.getPathInfo())
        + ",\"headers\":" + h + "}";
    String log = System.getProperty("diff.log");
    if (log != null) {
        synchronized (LOCK) {
            try (Writer w = new OutputStreamWriter(new FileOutputStream(log, true), StandardCharsets.UTF_8)) {
                w.write(json + "\n");
            }
        }
    }
    out.print(json);
%>
