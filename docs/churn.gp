$ours_none << EOD
1 314.8 2106
2 779.7 1460
4 842.0 3397
8 903.5 7446
16 1019.8 19609
32 930.1 16980
EOD
$ours_uid << EOD
1 416.5 1337
2 737.8 1267
4 790.4 4181
8 790.8 9635
16 1004.1 13420
32 823.5 24232
EOD
$ours_pid << EOD
1 336.0 3969
2 643.7 2110
4 721.3 4451
8 675.4 10908
16 814.9 18569
32 918.3 32428
EOD
$lttng_none << EOD
1 164.6 NaN
2 297.3 NaN
4 301.4 NaN
8 400.6 NaN
16 341.9 NaN
32 425.9 NaN
EOD
$lttng_uid << EOD
1 126.0 NaN
2 170.8 NaN
4 184.0 NaN
8 190.9 NaN
16 202.1 NaN
32 176.1 NaN
EOD
$lttng_pid << EOD
1 7.2 NaN
2 6.1 NaN
4 6.8 NaN
8 5.4 NaN
16 5.8 NaN
32 6.3 NaN
EOD
set terminal pngcairo size 1200,520 noenhanced
set output 'docs/churn.png'
set multiplot layout 1,2 title 'ustrace bench churn: short-lived apps, 2-core machine'
set logscale x 2
set xlabel 'PAR (apps launched at once)'
set key below
set grid
set ylabel 'apps/s'
set logscale y 10
plot $ours_none using 1:2 with linespoints lw 2 lc rgb '#555555' dt 1 pt 7 title 'ours none (200 apps)', $ours_uid using 1:2 with linespoints lw 2 lc rgb '#1f77b4' dt 1 pt 7 title 'ours uid (200 apps)', $ours_pid using 1:2 with linespoints lw 2 lc rgb '#d62728' dt 1 pt 7 title 'ours pid (200 apps)', $lttng_none using 1:2 with linespoints lw 2 lc rgb '#555555' dt 2 pt 6 title 'lttng none (200 apps)', $lttng_uid using 1:2 with linespoints lw 2 lc rgb '#1f77b4' dt 2 pt 6 title 'lttng uid (200 apps)', $lttng_pid using 1:2 with linespoints lw 2 lc rgb '#d62728' dt 2 pt 6 title 'lttng pid (40 apps)'
set ylabel 'p99 registration latency, app-measured (us)'
plot $ours_none using 1:3 with linespoints lw 2 lc rgb '#555555' dt 1 pt 7 title 'ours none (200 apps)', $ours_uid using 1:3 with linespoints lw 2 lc rgb '#1f77b4' dt 1 pt 7 title 'ours uid (200 apps)', $ours_pid using 1:3 with linespoints lw 2 lc rgb '#d62728' dt 1 pt 7 title 'ours pid (200 apps)'
unset multiplot
