# bench/nginx_backend.sh - sourced by the benchmark scripts: starts nginx as the backend,
# answering every request on port 18080 of every address with a small body.
#
#   start_nginx_backend WORK_DIR     (appends its pid to PIDS)
start_nginx_backend() {
  local work="$1"
  mkdir -p "$work/nginx"
  cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  keepalive_requests 1000000;
  server { listen 18080; location / { return 200 "ok\n"; } }
}
NGINX
  nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
  PIDS+=($!)
}
